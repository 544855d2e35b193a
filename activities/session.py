"""The AgentSession's activities: open, record, call the model, run a tool.

Each activity owns its transaction and is idempotent on its key (session, seq / step,
index), so a retry or a worker killed at any instant leaves no duplicate and no gap:
a retried ``call_model`` whose reply is already recorded returns that reply instead of
calling the model again, and a retried ``run_tool`` returns the recorded result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from vigil.activities import guard, metrics
from vigil.activities.agents import catalog as agent_catalog
from vigil.activities.agents.runtime import AgentVersions
from vigil.activities.artifacts.store import ArtifactStore
from vigil.activities.config import ActivitySettings
from vigil.activities.context import (
    ContextBudget,
    ContextRead,
    Degraded,
    assemble,
    read_context,
    warm_up,
)
from vigil.activities.context_cache import ContextCache
from vigil.activities.credentials import CredentialError
from vigil.activities.failures import describe, outage_of
from vigil.activities.guard import LocalLedgers, guarded
from vigil.activities.models.base import (
    ChatMessage,
    ModelProvider,
    ModelReply,
    ProviderError,
    StreamingProvider,
    ToolCall,
    ToolSpec,
)
from vigil.activities.models.connections import (
    DEFAULT_CONNECTION,
    FALLBACK_FROM_ATTEMPT,
    ConnectionError_,
    ModelRouter,
)
from vigil.activities.models.pricing import cost_usd
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import store as record
from vigil.activities.record.lean import Statements, engine_of, lean_transaction
from vigil.activities.record.rls import (
    acting_until_the_end,
    bound_acting_for,
    lean_acting_for,
)
from vigil.activities.token_stream import TokenPublisher
from vigil.activities.tools import folded
from vigil.activities.tools import registry as tools
from vigil.activities.tools.python import SessionArtifacts, idempotency_key
from vigil.activities.tools.runner import ToolCallInfo, WorkerTools
from vigil.schema import event_kinds, names
from vigil.schema.agents import ToolDescriptor, call_digest
from vigil.schema.payloads import (
    CallModelInput,
    CallModelOutput,
    OpenSessionInput,
    OpenSessionOutput,
    RecordInput,
    RecordOutput,
    RememberInput,
    RememberOutput,
    RunToolInput,
    RunToolOutput,
    ToolCallRef,
    ToolControl,
    preview,
)
from vigil.schema.tools import BUILTIN_TOOLS, ToolInfo
from vigil.schema.transcript import edited_note
from vigil.workflows.constants import OPENED_NEXT_SEQ

log = logging.getLogger("vigil.activities")

REMEMBER_INLINE_SECONDS = 10.0
"""How long the outcome's memory may take when it rides with the last records."""
# Spans go nowhere unless the worker set up tracing (workers/tracing.py).
_tracer = trace.get_tracer("vigil.activities")


@contextlib.asynccontextmanager
async def heartbeating(every: float | None = None) -> AsyncIterator[None]:
    """Heartbeat in the background so worker loss and cancellation are noticed quickly.

    The interval derives from the activity's own heartbeat timeout (a third of it), so a
    healthy worker is never mistaken for a lost one, whatever the session configured.
    The first beat comes after one interval, not at the start: an activity that ends
    sooner (most model calls) costs the server no heartbeat, and the server's timeout
    runs from the activity's start either way.
    """
    if activity.info().is_local:
        # A local activity has no heartbeat: its workflow task is what the SDK keeps alive.
        yield
        return
    if every is None:
        timeout = activity.info().heartbeat_timeout
        every = max(0.1, timeout.total_seconds() / 3) if timeout else 10.0

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            guard.beat()  # carries what earlier attempts left

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class SessionActivities:
    """Built by the worker with its dependencies; no module globals."""

    def __init__(
        self,
        *,
        settings: ActivitySettings,
        sessionmaker: async_sessionmaker[DbSession],
        store: ArtifactStore,
        provider: ModelProvider,
        http: httpx.AsyncClient,
        memory: Any | None = None,
        models: ModelRouter | None = None,
        agents: AgentVersions | None = None,
        tools: WorkerTools | None = None,
        context_cache: ContextCache | None = None,
    ) -> None:
        self.settings = settings
        self.context_cache = context_cache or ContextCache()
        """Each session's packed context kept between steps (activities.context_cache)."""
        self.tools = tools or WorkerTools()
        """Python tools and MCP servers this worker offers besides the built-ins."""
        self.sessionmaker = sessionmaker
        self._engine = engine_of(sessionmaker)
        self.store = store
        self.provider = provider
        self.http = http
        self.memory = memory
        # Named model connections (the worker's default provider is the `default` one)
        # and the reader of agent versions (their tool catalogs).
        self.models = models or ModelRouter({}, default_provider=provider)
        self.agents = agents or AgentVersions(sessionmaker)
        self.local_ledgers = LocalLedgers()
        """Outage ledgers of this worker's local activities between attempts (guard.py)."""

    def all(self) -> list[Any]:
        return [self.open_session, self.record, self.call_model, self.run_tool, self.remember]

    @activity.defn(name=names.ACT_REMEMBER)
    @guarded
    async def remember(self, arg: RememberInput) -> RememberOutput:
        """The outcome of the session as a memory: merged with a near-duplicate, or
        superseding the last outcome of the same goal, so a recurring goal keeps one live
        memory of how it last went and the history of the others."""
        return await self._remember(arg)

    async def _remember(self, arg: RememberInput) -> RememberOutput:
        if self.memory is None:
            return RememberOutput()
        failed = arg.status.value in ("failed", "budget_exhausted", "timed_out")
        goal = " ".join(arg.goal.split())
        content = (
            f"Working on '{preview(goal, 300)}' ended {arg.status.value} after {arg.steps} "
            f"steps: {preview(arg.summary, 1500)}"
        )
        content = content.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
        try:
            result = await self.memory.add(
                arg.agent_id,
                content,
                kind="lesson" if failed else "reflection",
                subject=f"outcome: {preview(goal, 200)}".replace("\x00", " ")
                .encode("utf-8", "replace")
                .decode("utf-8"),
                importance=0.7 if failed else 0.5,
                source_session_id=arg.session_id,
                key=f"{arg.session_id}:outcome",  # a retry returns the first result
                first_attempt=_first_attempt(),
            )
        except ValueError as exc:
            raise ApplicationError(
                str(exc), type=names.ERR_INVALID_INPUT, non_retryable=True
            ) from exc
        return RememberOutput(memory_id=result.id, action=result.action)

    # --- open / record ---------------------------------------------------------------

    @activity.defn(name=names.ACT_OPEN_SESSION)
    @guarded
    async def open_session(self, arg: OpenSessionInput) -> OpenSessionOutput:
        """Create the session row and its first message (the goal); idempotent.

        Creating the session (and its agent's row) is system work, done with the owner's
        rights: an agent never chooses a session id, so a taken one tells it nothing.
        Its first words are written acting for the agent, like every other.
        """
        return await self._open(arg)

    async def _open(self, arg: OpenSessionInput) -> OpenSessionOutput:
        """The open_session activity's work (also done by the first records that carry it)."""
        # One lean transaction: the agent's and the session's rows with the owner's rights
        # (one statement, the version in it), then the goal and its event acting for the
        # agent (one statement) until the transaction ends.
        async with lean_transaction(self._engine) as db:
            created, holder = await record.open_session_row(
                db,
                session_id=arg.session_id,
                agent_id=arg.agent_id,
                goal=arg.goal,
                status="running",
                schedule_id=arg.schedule_id,
                metadata={"system_prompt": arg.system_prompt} if arg.system_prompt else {},
                created_at=arg.started_at,
                agent_version=arg.agent_version,
            )
            if not created:  # a retry: it must be this agent's; its version as asked
                if holder is None:
                    holder = await record.session_agent(db, arg.session_id)
                if holder != arg.agent_id:
                    raise ApplicationError(
                        f"session id {arg.session_id!r} is taken by another agent",
                        type="InvalidInput",
                        non_retryable=True,
                    )
                if arg.agent_version is not None:
                    await agent_rows.set_session_agent(
                        db, arg.session_id, version=arg.agent_version
                    )
            await acting_until_the_end(db, arg.agent_id)
            await record.append_record(
                db,
                arg.session_id,
                arg.agent_id,
                [record.NewMessage(seq=0, role="user", content=arg.goal, step=0)],
                [
                    record.NewEvent(
                        key="session:opened",
                        kind=event_kinds.SESSION_OPENED,
                        payload={"schedule_id": arg.schedule_id},
                    )
                ],
            )
        return OpenSessionOutput(next_seq=OPENED_NEXT_SEQ, created=created)

    @activity.defn(name=names.ACT_RECORD)
    @guarded
    async def record(self, arg: RecordInput) -> RecordOutput:
        return await self._record(arg)

    async def _record(self, arg: RecordInput) -> RecordOutput:
        """The record activity's work (also done by a folded step's call_model): the
        session opened first when the records carry its opening, the outcome remembered
        last when they carry it."""
        if arg.open is not None:
            await self._open(arg.open)
        written = await self._write_records(arg)
        if arg.remember is not None:
            written.remembered = await self._remember_after_records(arg.remember)
        return written

    async def _remember_after_records(self, arg: RememberInput) -> bool:
        """The outcome's memory, once the records it rides with are written: tried once,
        for at most ``REMEMBER_INLINE_SECONDS``. Whatever goes wrong (the embedder, the
        database) is logged and answered False, never raised: the records stand, and the
        session remembers its outcome in an activity of its own after its ending is
        published (with that activity's budget, outages waited out)."""
        try:
            async with asyncio.timeout(REMEMBER_INLINE_SECONDS):
                await self._remember(arg)
        except Exception as exc:
            log.warning(
                "the outcome of session %s is remembered separately: %s",
                arg.session_id,
                describe(exc),
            )
            return False
        return True

    async def _write_records(self, arg: RecordInput) -> RecordOutput:
        messages = [
            record.NewMessage(
                seq=m.seq,
                role=m.role,
                content=m.content,
                step=m.step,
                name=m.name,
                tool_call_id=m.tool_call_id,
            )
            for m in arg.messages
        ]
        events = [
            record.NewEvent(
                key=e.key,
                kind=e.kind,
                step=e.step,
                actor=e.actor,
                reason=e.reason,
                payload=e.payload,
            )
            for e in arg.events
        ]
        inserted_messages = inserted_events = 0
        last_step: int | None = None
        s = arg.session
        guard, events = _end_guard(arg, messages, events)
        # Refused input recorded after the end is the one write a session's end allows.
        after_end = (
            s is None
            and not messages
            and arg.open_step_seq is None
            and all(e.kind == event_kinds.INPUT_REJECTED for e in events)
        )
        if messages or events or s is not None or arg.open_step_seq is not None:
            # A lean transaction: messages and events in one statement, then the row.
            async with lean_acting_for(self._engine, arg.agent_id) as db:
                if arg.open_step_seq is not None:
                    closed = await folded.close_open_step(
                        db, arg.session_id, arg.agent_id, arg.open_step_seq, messages
                    )
                    messages, inserted_messages = closed.rest, closed.inserted
                    last_step = closed.last_step
                    events = _at_last_step(events, last_step)
                if after_end or guard is None:
                    written, ended = (
                        await record.append_record(
                            db, arg.session_id, arg.agent_id, messages, events
                        ),
                        None,
                    )
                else:
                    written, ended = await record.append_record_until_ended(
                        db, arg.session_id, arg.agent_id, messages, events, guard
                    )
                inserted_messages += written[0]
                inserted_events = written[1]
                if ended is None and s is not None:
                    changed = await record.update_session(
                        db,
                        arg.session_id,
                        status=s.status.value if s.status else None,
                        step=s.step,
                        goal=s.goal,
                        summary=s.summary,
                        finished=s.finished,
                        run_count=s.run_count,
                        until_ended=guard,
                    )
                    if not changed:
                        ended = ""  # the row's status says which end
                if ended is not None:
                    raise await self._ended_in_record(db, arg.session_id, ended)
        if arg.session is not None and arg.session.agent_version is not None:
            # Pinning the agent version (and its prompt) is the system's work, like creating
            # the session row: the agent role may not rewrite a session's metadata.
            async with lean_transaction(self._engine) as db:
                await agent_rows.set_session_agent(
                    db,
                    arg.session_id,
                    version=arg.session.agent_version,
                    system_prompt=arg.session.system_prompt,
                )
        return RecordOutput(
            inserted_messages=inserted_messages,
            inserted_events=inserted_events,
            last_step=last_step,
        )

    @staticmethod
    async def _ended_in_record(db: Statements, session_id: str, status: str) -> ApplicationError:
        """The failure that tells the workflow its record holds another end (see
        ``names.ERR_ENDED_IN_RECORD``): the recorded status and summary as its details."""
        row = await record.get_session(db, session_id)
        summary = row.summary if row is not None and row.summary else ""
        status = status or (row.status if row is not None else "")
        log.warning(
            "session %s has ended in the record (%s) on a path its workflow did not take: "
            "the recorded end stands",
            session_id,
            status,
        )
        return ApplicationError(
            f"the session has ended in the record ({status})",
            status,
            summary,
            type=names.ERR_ENDED_IN_RECORD,
            non_retryable=True,
        )

    # --- the model --------------------------------------------------------------------

    async def _context(
        self,
        session_id: str,
        agent_id: str,
        limit: int,
        tokens: int | None = None,
        recall: int | None = None,
        step: int | None = None,
        read: ContextRead | None = None,
    ) -> tuple[list[ChatMessage], Degraded | None]:
        """Recent turns, a kept summary of older ones, memories and artifact references,
        packed into the token budget (see activities.context), read acting for the agent
        (``read``: the record's part, read already by ``_read_context``); and what the
        step went without if assembly ran past its time budget."""
        with metrics.timed(metrics.CONTEXT_SECONDS, agent_id):
            assembled = await assemble(
                self.sessionmaker,
                session_id=session_id,
                agent_id=agent_id,
                budget=self._context_budget(limit, tokens, recall),
                memory=self.memory,
                cache=self.context_cache,
                time_budget_ms=self.context_cache.config.time_budget_ms,
                step=step,
                read=read,
            )
        return [_wire_message(m) for m in assembled.messages], assembled.degraded

    async def warm_up(self) -> None:
        """What a step's context costs once per worker or connection, paid before the
        worker polls (``activities.context.warm_up``)."""
        await warm_up(
            self.sessionmaker,
            memory=self.memory,
            budget=ContextBudget(total_tokens=self.settings.context_tokens),
        )

    def _context_budget(self, limit: int, tokens: int | None, recall: int | None) -> ContextBudget:
        return ContextBudget(
            total_tokens=tokens or self.settings.context_tokens,
            max_recent=limit,
            **({"recall_k": recall} if recall is not None else {}),
        )

    async def _read_context(self, db: Statements, arg: CallModelInput) -> ContextRead:
        """The record's part of the model call's context, read on ``db`` (acting for the
        agent), with whether the reply is recorded already."""
        return await read_context(
            db,
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            budget=self._context_budget(arg.context_messages, arg.context_tokens, arg.recall),
            memory=self.memory,
            cache=self.context_cache,
            time_budget_ms=self.context_cache.config.time_budget_ms,
            reply_seq=arg.seq,
        )

    @staticmethod
    def _refs(
        calls: list[dict[str, Any]],
        allowed: list[str],
        catalog: dict[str, ToolDescriptor] | None = None,
    ) -> list[ToolCallRef]:
        """The calls as the workflow sees them. With an agent definition, each carries
        its digest and whether an ``approve_when`` rule of its tool matched."""
        refs: list[ToolCallRef] = []
        for index, call in enumerate(calls):
            args, error = tools.parse_arguments(call["arguments"])
            digest: str | None = None
            matched: bool | None = None
            if args is not None:
                if catalog is None:
                    error = tools.validate(call["name"], args, allowed)
                else:
                    error = agent_catalog.call_error(catalog, call["name"], args, allowed)
                    digest = call_digest(str(call["name"]), args)
                    if error is None:
                        matched = agent_catalog.rules_match(catalog[call["name"]], args)
            refs.append(
                ToolCallRef(
                    index=index,
                    call_id=_wire(call["id"]),
                    # Any name the model chose, bounded: a valid one is short.
                    name=_wire(preview(call["name"], 200)),
                    valid=error is None,
                    error=_wire(preview(error, 1000)) if error else None,
                    arguments_preview=_wire(preview(call["arguments"], 300)),
                    digest=digest,
                    rule_matched=matched,
                )
            )
        return refs

    async def _catalog(
        self, agent_id: str, version: int | None
    ) -> dict[str, ToolDescriptor] | None:
        """The pinned version's tool catalog (None for an agent without a definition)."""
        if version is None:
            return None
        return await self.agents.catalog(agent_id, version)

    async def _provider(self, arg: CallModelInput) -> tuple[ModelProvider, str]:
        """The connection's provider; its fallback once the first has failed twice."""
        if arg.connection is None:
            return self.provider, DEFAULT_CONNECTION
        name, model = arg.connection, arg.model
        if arg.fallback and activity.info().attempt >= FALLBACK_FROM_ATTEMPT:
            name, model = arg.fallback, None
        try:
            provider, _ = await self.models.provider(name, model)
        except CredentialError as exc:
            raise ApplicationError(
                str(exc), type=names.ERR_CREDENTIAL_MISSING, non_retryable=True
            ) from None
        except ConnectionError_ as exc:
            raise ApplicationError(
                str(exc), type=names.ERR_MODEL_CONNECTION, non_retryable=True
            ) from None
        return provider, name

    async def _ask(
        self,
        provider: ModelProvider,
        arg: CallModelInput,
        context: list[ChatMessage],
        specs: list[ToolSpec],
    ) -> ModelReply:
        """One model call; streamed when the provider can, its tokens published live."""
        options: dict[str, Any] = {"max_tokens": arg.max_tokens}
        if arg.temperature is not None:
            options["temperature"] = arg.temperature
        if not isinstance(provider, StreamingProvider):
            return await provider.complete(context, specs, **options)
        tokens = TokenPublisher(
            self.sessionmaker,
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            seq=arg.seq,
            attempt=activity.info().attempt,
        )
        try:
            return await provider.stream(context, specs, on_delta=tokens, **options)
        finally:
            await tokens.aclose()

    @activity.defn(name=names.ACT_CALL_MODEL)
    @guarded
    async def call_model(self, arg: CallModelInput) -> CallModelOutput:
        if arg.records is not None:
            # Queued by the workflow since the last step: in the record before the
            # context is read, so the model sees a human's message this very step.
            await self._record(arg.records)
        started = time.monotonic()
        out = await self._model_step(arg)
        if arg.batch is not None:
            out.more = await self._more_steps(arg, out, started)
        return out

    async def _model_step(self, arg: CallModelInput) -> CallModelOutput:
        """One step's model call and, in a folded step, the reply's leading calls."""
        out, written, failed = await self._call_model(arg)
        if arg.fold_tools:

            async def run_tool(call: RunToolInput) -> RunToolOutput:
                if failed is not None and call.call_index == failed.index:
                    # It failed before the reply was recorded: handed back to its own
                    # activity, which retries it, instead of failing here a second time.
                    raise FailedBeforeReply(f"{type(failed.error).__name__}: {failed.error}")
                # This attempt wrote the reply just now, so no tool of this step has run
                # but those it answered with the reply (calls that change nothing, not run
                # again here): the first call, when none was, needs no reading. Later
                # ones check the record first, as run_tool does: the session may have
                # ended meanwhile and answered them (NOT_RUN).
                first = written is not None and call.call_index == 0
                return await self._run_tool(call, calls=written if first else None)

            out.folded = await folded.run_leading_calls(run_tool, arg, out)
        return out

    async def _more_steps(
        self, arg: CallModelInput, first: CallModelOutput, started: float
    ) -> list[CallModelOutput]:
        """The steps a batch takes after its first (``CallModelInput.batch``): each while
        the one before it was plain and the session's workflow, judging between steps,
        would take another; none starts once the call has run for the batch's window
        (from ``started``, its own start) or past the session's deadline. A step that
        fails is handed back (``first.handed_back``): the workflow calls it at once on its
        own (with its own retries) and finds in the record whatever of it was written."""
        batch = arg.batch
        assert batch is not None
        more: list[CallModelOutput] = []
        tokens, cost, size = batch.tokens_used, batch.cost_used, 0
        last_arg, last = arg, first
        while True:
            # As the workflow sums them, step by step (the same float).
            tokens += last.tokens_in + last.tokens_out
            cost += last.cost_usd
            size += folded.output_size(last)
            if (
                len(more) >= batch.steps
                or size >= folded.BATCH_BYTES
                or not folded.plain(last)
                or (batch.max_tokens is not None and tokens >= batch.max_tokens)
                or (batch.max_cost_usd is not None and cost >= batch.max_cost_usd)
                or (time.monotonic() - started) * 1000 >= batch.window_ms
                or (batch.deadline is not None and datetime.now(UTC) >= batch.deadline)
            ):
                return more
            step_arg = last_arg.model_copy(
                update={
                    "step": last_arg.step + 1,
                    "seq": last.seq + 1 + len(last.tool_calls),
                    "records": None,
                    "batch": None,
                }
            )
            try:
                out = await self._model_step(step_arg)
            except Exception as exc:  # its own local activity calls it again
                log.info(
                    "step %s of a batch handed back: %s",
                    step_arg.step,
                    exc,
                    extra={"session_id": arg.session_id},
                )
                first.handed_back = True
                return more
            more.append(out)
            last_arg, last = step_arg, out

    async def _replay(
        self,
        db: Statements,
        arg: CallModelInput,
        catalog: dict[str, ToolDescriptor] | None,
    ) -> CallModelOutput:
        """The reply recorded before a crash or a lost completion: returned, nothing called."""
        (msg,) = await record.messages_by_seq(db, arg.session_id, [arg.seq])
        event = await record.get_event(db, arg.session_id, f"model:{arg.step}")
        usage = event.payload if event else {}
        return CallModelOutput(
            seq=arg.seq,
            content_preview=_wire(preview(msg.content)),
            finish_reason=str(usage.get("finish_reason", "stop")),
            tool_calls=self._refs(msg.tool_calls or [], arg.allowed_tools, catalog),
            tokens_in=int(usage.get("tokens_in", 0)),
            tokens_out=int(usage.get("tokens_out", 0)),
            cost_usd=float(usage.get("cost_usd", 0.0)),
            replayed=True,
        )

    async def _call_model(
        self, arg: CallModelInput
    ) -> tuple[CallModelOutput, list[dict[str, Any]] | None, _Failed | None]:
        """The model call's output; the reply's tool calls when this call wrote the reply
        (None when it was recorded already); the call that failed before the reply was
        recorded, if one did."""
        catalog = await self._catalog(arg.agent_id, arg.agent_version)
        # One statement: the record's part of the context, which also tells whether the
        # reply is recorded already (a retry after a crash or a lost completion): then
        # that reply is returned and nothing is called.
        async with bound_acting_for(self._engine, arg.agent_id) as db:
            read = await self._read_context(db, arg)
            if read.has_reply:
                return await self._replay(db, arg, catalog), None, None
        provider, connection = await self._provider(arg)
        context, degraded = await self._context(
            arg.session_id,
            arg.agent_id,
            arg.context_messages,
            arg.context_tokens,
            arg.recall,
            arg.step,
            read,
        )
        specs = (
            [_spec(n) for n in arg.allowed_tools if n in BUILTIN_TOOLS]
            if catalog is None
            else [_descriptor_spec(catalog[n]) for n in arg.allowed_tools if n in catalog]
        )
        started = time.perf_counter()
        try:
            async with heartbeating():
                reply = await self._ask(provider, arg, context, specs)
        except ProviderError as exc:
            metrics.model_failed(agent_id=arg.agent_id, model=arg.model or connection)
            raise _provider_failure(exc, connection) from exc
        latency_ms = reply.latency_ms or (time.perf_counter() - started) * 1000
        cost = cost_usd(reply.model, reply.usage)
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]
        usage = {
            "tokens_in": reply.usage.input_tokens,
            "tokens_out": reply.usage.output_tokens,
            "cost_usd": cost,
            "latency_ms": round(latency_ms, 3),
            "model": reply.model,
            "finish_reason": reply.finish_reason,
            "tool_calls": len(calls),
        }
        if arg.connection is not None:
            usage["connection"] = connection
        if degraded is not None:
            usage["context_degraded"] = degraded.as_payload()
        refs = self._refs(calls, arg.allowed_tools, catalog)
        answers, failed = await self._answers_before_reply(arg, calls, refs, catalog)
        # One statement: on a connection bound to the agent, one round trip.
        async with bound_acting_for(self._engine, arg.agent_id) as db:
            wrote, fresh = await record.append_reply(
                db,
                arg.session_id,
                arg.agent_id,
                record.NewMessage(
                    seq=arg.seq,
                    role="assistant",
                    content=reply.content,
                    step=arg.step,
                    tool_calls=calls or None,
                ),
                record.NewEvent(
                    key=f"model:{arg.step}",
                    kind=event_kinds.MODEL_CALL,
                    step=arg.step,
                    payload=usage,
                ),
                tokens_in=reply.usage.input_tokens,
                tokens_out=reply.usage.output_tokens,
                cost_usd=cost,
                step=arg.step,
                answers=[a.message for a in answers],
                answer_events=[a.event for a in answers],
            )
        if not wrote:
            answers = []  # the reply was in the record already: so are its answers, if any
        for answer in answers:
            answer.told()
        metrics.model_call(
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            model=reply.model,
            seconds=latency_ms / 1000,
            tokens_in=reply.usage.input_tokens,
            tokens_out=reply.usage.output_tokens,
            cost_usd=cost,
            new_step=bool(fresh),
        )
        return (
            CallModelOutput(
                seq=arg.seq,
                content_preview=_wire(preview(reply.content)),
                finish_reason=reply.finish_reason,
                tool_calls=refs,
                tokens_in=reply.usage.input_tokens,
                tokens_out=reply.usage.output_tokens,
                cost_usd=cost,
                latency_ms=latency_ms,
                folded=[a.output for a in answers],
            ),
            (calls if wrote else None),
            # A reply recorded first (by another attempt, or the session) has its answers
            # in the record: a call that failed here is read from there, not handed back.
            failed if wrote else None,
        )

    async def _answers_before_reply(
        self,
        arg: CallModelInput,
        calls: list[dict[str, Any]],
        refs: list[ToolCallRef],
        catalog: dict[str, ToolDescriptor] | None,
    ) -> tuple[list[_Answer], _Failed | None]:
        """The answers of the reply's leading folded calls that change nothing anywhere,
        found before the reply is recorded so they are written in its statement: a call
        to a tool that only reads (effects ``none``), or one a built-in refuses by its
        arguments alone (``registry.REFUSALS``: nothing is run). A crash before that
        statement loses nothing (the reply is not recorded either, and the next attempt
        asks again). Stops at the first other call; the calls after it run as before,
        once the reply is recorded. Stops too at a call that fails (an outage of our own
        parts): returned, so that it is handed back to its own activity rather than run a
        second time once the reply is recorded."""
        if not arg.fold_tools:
            return [], None
        allowed = set(arg.fold_tools)
        answers: list[_Answer] = []
        for ref, call in zip(refs, calls, strict=True):
            if not ref.valid or ref.name not in allowed:
                break
            if not self._changes_nothing(str(call["name"]), str(call["arguments"]), catalog):
                break
            try:
                with _tracer.start_as_current_span(
                    "RunTool", attributes={"vigil.step": arg.step, "vigil.call_index": ref.index}
                ):
                    answer = await self._tool_answer(
                        folded.call_input(arg, ref.index), calls, before_reply=True
                    )
            except Exception as exc:  # handed back once the reply is recorded
                log.info(
                    "call %s of step %s failed before the reply was recorded: %s",
                    ref.index,
                    arg.step,
                    exc,
                    extra={"session_id": arg.session_id},
                )
                return answers, _Failed(ref.index, exc)
            if answer is None or isinstance(answer, RunToolOutput):
                # Too long to keep inline (its artifact is written once the reply is
                # recorded), or nothing to record (the workflow's own tool).
                break
            answers.append(answer)
        return answers, None

    def _changes_nothing(
        self, name: str, arguments: str, catalog: dict[str, ToolDescriptor] | None
    ) -> bool:
        """Whether a call to ``name`` with ``arguments`` changes nothing, here or outside."""
        tool: ToolDescriptor | ToolInfo | None = (
            BUILTIN_TOOLS.get(name) if catalog is None else catalog.get(name)
        )
        if tool is None or tool.handled_by != "activity":
            return False
        if tool.effects == "none":
            return True
        refuse = tools.REFUSALS.get(name)
        if refuse is None or (isinstance(tool, ToolDescriptor) and tool.kind != "builtin"):
            return False
        args, error = tools.parse_arguments(arguments)
        return args is not None and error is None and refuse(self.settings, args) is not None

    # --- tools ------------------------------------------------------------------------

    @activity.defn(name=names.ACT_RUN_TOOL)
    @guarded
    async def run_tool(self, arg: RunToolInput) -> RunToolOutput:
        return await self._run_tool(arg)

    async def _run_tool(
        self, arg: RunToolInput, calls: list[dict[str, Any]] | None = None
    ) -> RunToolOutput:
        """The run_tool activity's work (also done by a folded step's call_model), in a
        span of its own so a folded call shows in the session's trace too. ``calls``: the
        reply's tool calls, given by a model call that wrote the reply in this attempt
        (then nothing of this step's tools can be recorded yet, and nothing is read)."""
        with _tracer.start_as_current_span(
            "RunTool", attributes={"vigil.step": arg.step, "vigil.call_index": arg.call_index}
        ):
            return await self._tool_work(arg, calls)

    async def _tool_work(
        self, arg: RunToolInput, calls: list[dict[str, Any]] | None = None
    ) -> RunToolOutput:
        answer = await self._tool_answer(arg, calls)
        if isinstance(answer, RunToolOutput):
            return answer
        assert answer is not None  # None only for an answer before the reply

        async with bound_acting_for(self._engine, arg.agent_id) as db:
            await record.append_record(
                db, arg.session_id, arg.agent_id, [answer.message], [answer.event]
            )
        answer.told()
        return answer.output

    async def _tool_answer(
        self,
        arg: RunToolInput,
        calls: list[dict[str, Any]] | None = None,
        *,
        before_reply: bool = False,
    ) -> RunToolOutput | _Answer | None:
        """The call run (or refused) and its answer, not yet recorded; or the output
        itself when there is nothing to record (recorded already, or the workflow's
        tool). ``before_reply``: the reply is not recorded yet, so nothing may be written
        anywhere: None instead of an output too long to keep inline (the claim check
        would store it as an artifact)."""
        catalog = await self._catalog(arg.agent_id, arg.agent_version)
        key = f"tool:{arg.step}:{arg.call_index}"
        if calls is None:
            # Two reads of an append-only record (a result and its event are written in
            # one statement): no transaction needed around them.
            async with bound_acting_for(self._engine, arg.agent_id) as db:
                found = await record.messages_by_seq(db, arg.session_id, [arg.model_seq, arg.seq])
                by_seq = {m.seq: m for m in found}
                ev = await record.get_event(db, arg.session_id, key) if arg.seq in by_seq else None
            model_msg = by_seq.get(arg.model_seq)
            calls = (model_msg.tool_calls or []) if model_msg else []
            if arg.seq in by_seq:
                # Answered already. A workflow-handled tool's answer is the workflow's own
                # record of doing what it asked (a finish, a wake): asked again (its
                # workflow task was lost after that record, as a low-latency step's can
                # be), the call asks it again, or the session would go on past it.
                asked = _recorded_control(arg, calls, catalog)
                if asked is not None:
                    return asked
                ok = bool(ev.payload.get("ok")) if ev else True
                return RunToolOutput(
                    seq=arg.seq, ok=ok, preview=_wire(preview(by_seq[arg.seq].content))
                )
        if arg.call_index >= len(calls):
            raise ApplicationError(
                f"no tool call {arg.call_index} in message {arg.model_seq}",
                type=names.ERR_TOOL_CALL_MISSING,
                non_retryable=True,
            )
        call = calls[arg.call_index]
        name, call_id = str(call["name"]), str(call["id"])
        # The model chose this name; an unknown one may hold anything (NUL, lone
        # surrogates) that the message's plain `name` column cannot store. The exact name
        # stays in the assistant message and the tool_call event.
        known = catalog if catalog is not None else BUILTIN_TOOLS
        stored_name = name if name in known else _printable(name)
        trace.get_current_span().set_attribute("vigil.tool", stored_name)
        started = time.perf_counter()

        args, error, rejected = _checked_arguments(arg, call, catalog)
        if error is None and args is not None and arg.approved_digest is not None:
            await self._check_approved(arg, key, name, args)
        tool = catalog[name] if catalog is not None and error is None else None
        if error is None and args is not None and _workflow_handled(name, catalog):
            metrics.tool_call(agent_id=arg.agent_id, tool=name, ok=True)
            return _control_output(arg, name, args)

        data: dict[str, Any] | None = None
        sha: str | None = None
        if error is not None:
            ok, text = False, f"error: {error}"
        else:
            assert args is not None
            try:
                async with heartbeating():
                    if tool is None or tool.kind == "builtin":
                        outcome = await self._run_builtin(arg, name, args)
                    else:
                        outcome = await self._run_catalog(arg, tool, call_id, args)
                ok, text, data = True, outcome.text, outcome.data
            except tools.ToolFailed as exc:
                ok, text = False, f"error: {exc}"
            except ApplicationError:
                raise  # ToolNotLoaded, ToolRetry: Temporal's to decide
            except Exception as exc:  # a tool's bug goes back to the model, not the session
                if outage_of(exc) is not None:
                    raise  # our infrastructure is away: retried until it is back
                log.exception(
                    "tool %s crashed", name, extra={"session_id": arg.session_id, "tool": name}
                )
                ok, text = False, f"error: tool {name} failed: {exc.__class__.__name__}: {exc}"
        checked = await self._claim_check(arg, name, text, before_reply=before_reply)
        if checked is None:
            return None
        text, sha = checked
        edited = arg.edited_arguments is not None
        if edited:
            # Every view of the transcript (and the model) learns what really ran.
            text = f"{edited_note(arg.edited_arguments, arg.edited_by)}\n{text}"
        payload = {
            "tool": name,
            "call_id": call_id,
            "ok": ok,
            "arguments": args,
            "edited": edited,
            **(_edit_fields(call["arguments"], arg.edited_by) if edited else {}),
            "rejected": rejected,
            "output_preview": preview(text, 2000),
            "artifact_sha256": sha,
            "data": data,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        return _Answer(
            output=RunToolOutput(
                seq=arg.seq, ok=ok, preview=_wire(preview(text)), artifact_sha256=sha
            ),
            message=record.NewMessage(
                seq=arg.seq,
                role="tool",
                content=text,
                step=arg.step,
                name=stored_name,
                tool_call_id=call_id,
            ),
            event=record.NewEvent(
                key=key, kind=event_kinds.TOOL_CALL, step=arg.step, payload=payload
            ),
            agent_id=arg.agent_id,
            tool=name if name in known else "unknown",
        )

    async def _check_approved(
        self, arg: RunToolInput, key: str, name: str, args: dict[str, Any]
    ) -> None:
        """Run only the call a human approved: its digest must be the approved one."""
        actual = call_digest(name, args)
        if actual == arg.approved_digest:
            return
        async with self.sessionmaker.begin() as db:
            await record.record_events(
                db,
                arg.session_id,
                arg.agent_id,
                [
                    record.NewEvent(
                        key=f"approval_mismatch:{arg.step}:{arg.call_index}",
                        kind=event_kinds.APPROVAL_MISMATCH,
                        step=arg.step,
                        reason="the call to run is not the approved one",
                        payload={
                            "tool": name,
                            "approved_digest": arg.approved_digest,
                            "digest": actual,
                            "tool_event": key,
                        },
                    )
                ],
            )
        raise ApplicationError(
            f"refused to run {name}: the call (digest {actual[:12]}) is not the approved one "
            f"(digest {str(arg.approved_digest)[:12]})",
            type=names.ERR_APPROVAL_MISMATCH,
            non_retryable=True,
        )

    async def _run_builtin(
        self, arg: RunToolInput, name: str, args: dict[str, Any]
    ) -> tools.ToolOutcome:
        ctx = tools.BuiltinContext(
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            step=arg.step,
            settings=self.settings,
            store=self.store,
            sessionmaker=self.sessionmaker,
            http=self.http,
            memory=self.memory,
            call_index=arg.call_index,
            first_attempt=_first_attempt(),
        )
        return await tools.IMPLEMENTATIONS[name](ctx, args)

    async def _run_catalog(
        self, arg: RunToolInput, tool: ToolDescriptor, call_id: str, args: dict[str, Any]
    ) -> tools.ToolOutcome:
        """A Python or MCP tool, through the worker's tool registry (an MCP tool's server
        as the pinned version names it)."""
        server = None
        if tool.kind == "mcp" and tool.server is not None and arg.agent_version is not None:
            server = await self.agents.mcp_server(arg.agent_id, arg.agent_version, tool.server)
        call = ToolCallInfo(
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            step=arg.step,
            call_index=arg.call_index,
            call_id=call_id,
            idempotency_key=idempotency_key(arg.session_id, arg.step, arg.call_index),
            attempt=activity.info().attempt,
        )
        artifacts = SessionArtifacts(self.store, self.sessionmaker, arg.agent_id, arg.session_id)
        return await self.tools.run(tool, args, call, artifacts=artifacts, mcp_server=server)

    async def _claim_check(
        self, arg: RunToolInput, name: str, text: str, *, before_reply: bool = False
    ) -> tuple[str, str | None] | None:
        """Outputs over the inline limit go to the artifact store; the message keeps a head.
        ``before_reply``: nothing may be written yet, so None for such an output."""
        raw = text.encode("utf-8", errors="surrogatepass")
        limit = self.settings.inline_limit_bytes
        if len(raw) <= limit:
            return text, None
        if before_reply:
            return None
        from vigil.activities.artifacts.registry import put_artifact

        ref = await put_artifact(
            self.store,
            self.sessionmaker,
            agent_id=arg.agent_id,
            session_id=arg.session_id,
            name=f"tool-output/{arg.step}-{arg.call_index}-{name}.txt",
            data=raw,
            mime_type="text/plain; charset=utf-8",
        )
        head = raw[: limit // 4].decode("utf-8", errors="ignore")
        return (
            f"{head}\n[output truncated: {len(raw)} bytes in total, stored as artifact "
            f"{ref.name!r} sha256 {ref.sha256}; use read_artifact to read it]",
            ref.sha256,
        )


def _end_guard(
    arg: RecordInput, messages: list[record.NewMessage], events: list[record.NewEvent]
) -> tuple[record.EndGuard | None, list[record.NewEvent]]:
    """The guard of a write of this workflow run (see ``record.EndGuard``; None outside an
    activity), and the events to write: an end write's ``session_ended`` event is given
    the run and the seq of the end's message (the workflow's one system message named
    ``vigil``), which that guard compares."""
    run_id = activity.info().workflow_run_id if activity.in_activity() else None
    if run_id is None:
        return None, events
    s = arg.session
    if s is None or not s.finished or s.status is None:
        return record.EndGuard(run_id), events
    seq = next((m.seq for m in messages if m.role == "system" and m.name == "vigil"), None)
    named = [
        dataclasses.replace(e, payload={**e.payload, "run_id": run_id, "seq": seq})
        if e.kind == event_kinds.SESSION_ENDED
        else e
        for e in events
    ]
    return record.EndGuard(run_id, seq, s.status.value), named


def _at_last_step(events: list[record.NewEvent], step: int | None) -> list[record.NewEvent]:
    """The end's event at the last step the record holds when a model call took steps
    past the one its workflow knew of (a batch the session ended inside)."""
    if step is None:
        return events
    return [
        dataclasses.replace(e, step=step)
        if e.kind == event_kinds.SESSION_ENDED and e.step < step
        else e
        for e in events
    ]


def _first_attempt() -> bool:
    """Whether this is the running activity's first attempt (a local activity run again
    after its workflow task was lost starts at 1 too: keyed writes still happen once)."""
    return activity.in_activity() and activity.info().attempt == 1


def _spec(name: str) -> Any:
    from vigil.activities.models.base import ToolSpec

    info = BUILTIN_TOOLS[name]
    return ToolSpec(name=info.name, description=info.description, parameters=info.parameters)


@dataclass
class _Answer:
    """A tool call's answer before it is recorded: its output for the workflow, the
    result message and the tool_call event."""

    output: RunToolOutput
    message: record.NewMessage
    event: record.NewEvent
    agent_id: str
    tool: str
    """The tool's name for metrics (``unknown`` for a name no catalog has)."""

    def told(self) -> None:
        """Counted once its answer is in the record."""
        metrics.tool_call(agent_id=self.agent_id, tool=self.tool, ok=self.output.ok)


class FailedBeforeReply(Exception):
    """A folded call that failed before its reply was recorded, ending the fold there (it
    is not run a second time: the workflow's own ``run_tool`` activity takes it)."""


@dataclass(frozen=True)
class _Failed:
    """A call that failed before its reply was recorded: its index and what it raised."""

    index: int
    error: Exception


def _wire(text: str) -> str:
    """Text that can cross into workflow history: the JSON payload must be valid UTF-8, so
    lone surrogates a model may send are escaped (the record keeps them exactly)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _wire_message(m: ChatMessage) -> ChatMessage:
    """``m`` as it may go on the wire. The record holds text exactly (lone surrogates
    included); what is sent must be valid UTF-8, escaped the same way everywhere so call
    ids still pair up. Nearly always all of it is valid already: then ``m`` itself."""
    texts = [m.content, m.tool_call_id or ""]
    for c in m.tool_calls:
        texts += (c.id, c.name, c.arguments)
    if all(t.isascii() or _wire(t) is t for t in texts):
        return m
    return ChatMessage(
        role=m.role,
        content=_wire(m.content),
        tool_calls=[
            ToolCall(id=_wire(c.id), name=_wire(c.name), arguments=_wire(c.arguments))
            for c in m.tool_calls
        ],
        tool_call_id=_wire(m.tool_call_id) if m.tool_call_id else None,
        name=m.name,
    )


def _edit_fields(original: Any, by: str | None) -> dict[str, Any]:
    """What the tool_call event adds for a call a human edited: the model's arguments
    (parsed when they are JSON) and the editor."""
    parsed, _error = tools.parse_arguments(str(original))
    return {"original_arguments": parsed if parsed is not None else original, "edited_by": by}


def _printable(name: str) -> str:
    return preview(_wire(name).replace("\x00", "\\x00"), 200)


def _checked_arguments(
    arg: RunToolInput, call: dict[str, Any], catalog: dict[str, ToolDescriptor] | None
) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The call's arguments (a human's edit when there is one), why they may not run, and
    whether that is the workflow's refusal."""
    name = str(call["name"])
    args: dict[str, Any] | None
    if arg.edited_arguments is not None:
        error = tools.check_shape(arg.edited_arguments)
        args = None if error else arg.edited_arguments
    else:
        args, error = tools.parse_arguments(str(call["arguments"]))
    if args is not None and error is None:
        error = (
            tools.validate(name, args)
            if catalog is None
            else agent_catalog.call_error(catalog, name, args)
        )
    # A call the workflow refuses (a human's rejection, or a tool outside the session's
    # policy) is never run; its own argument errors, if any, are the more useful answer.
    rejected = error is None and arg.rejected_reason is not None
    if rejected:
        error = arg.rejected_reason
    return args, error, rejected


def _workflow_handled(name: str, catalog: dict[str, ToolDescriptor] | None) -> bool:
    """Whether a valid call to ``name`` is the workflow's to carry out (finish, a wait)."""
    tool = catalog[name] if catalog is not None else BUILTIN_TOOLS[name]
    return tool.handled_by == "workflow"


def _control_output(arg: RunToolInput, name: str, args: dict[str, Any]) -> RunToolOutput:
    """A workflow-handled call's output: what it asks, for the workflow to do and record."""
    return RunToolOutput(
        seq=arg.seq, ok=True, preview="", recorded=False, control=_control(name, args)
    )


def _recorded_control(
    arg: RunToolInput, calls: list[dict[str, Any]], catalog: dict[str, ToolDescriptor] | None
) -> RunToolOutput | None:
    """A recorded call's output again when the call was a valid workflow-handled one (its
    recorded answer is what the workflow made of it); None for any other call."""
    if arg.call_index >= len(calls):
        return None
    call = calls[arg.call_index]
    name = str(call["name"])
    if name not in (catalog if catalog is not None else BUILTIN_TOOLS):
        return None
    if not _workflow_handled(name, catalog):
        return None  # the usual case: its recorded answer is all there is
    args, error, _ = _checked_arguments(arg, call, catalog)
    if error is not None or args is None:
        return None
    return _control_output(arg, name, args)


def _control(name: str, args: dict[str, Any]) -> ToolControl:
    if name == "finish":
        succeeded = args.get("succeeded")
        return ToolControl(
            kind="finish",
            summary=_wire(str(args.get("summary", ""))),
            succeeded=succeeded if isinstance(succeeded, bool) else None,
        )
    if name == "ask_human":
        return ToolControl(kind="ask_human", question=_wire(str(args["question"])))
    seconds, when = tools.parse_wake_time(args)
    return ToolControl(kind="wait_until", seconds=seconds, wake_at=when)


def _descriptor_spec(tool: ToolDescriptor) -> Any:
    from vigil.activities.models.base import ToolSpec

    return ToolSpec(name=tool.name, description=tool.description, parameters=tool.parameters)


def _provider_failure(exc: ProviderError, connection: str = DEFAULT_CONNECTION) -> ApplicationError:
    where = "" if connection == DEFAULT_CONNECTION else f" (connection {connection})"
    details = f"{exc.status or '-'}: {exc.message}{where}"
    if exc.retryable:
        delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
        return ApplicationError(
            f"model provider transient failure {details}",
            type=names.ERR_PROVIDER_TRANSIENT,
            next_retry_delay=delay,
        )
    return ApplicationError(
        f"model provider refused the request {details}",
        type=names.ERR_PROVIDER_REJECTED,
        non_retryable=True,
    )
