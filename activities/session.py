"""The AgentSession's activities: open, record, call the model, run a tool.

Each activity owns its transaction and is idempotent on its key (session, seq / step,
index), so a retry or a worker killed at any instant leaves no duplicate and no gap:
a retried ``call_model`` whose reply is already recorded returns that reply instead of
calling the model again, and a retried ``run_tool`` returns the recorded result.

This module holds the model's call (its context, the folded step, step batches). The
class is built in layers: session_records.py (the opening, the records, the end and the
outcome's memory) and session_tools.py (``run_tool``, and the answer of each call).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

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
from vigil.activities.failures import WorkerNotReady
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
from vigil.activities.record import store as record
from vigil.activities.record.lean import Statements, engine_of
from vigil.activities.record.rls import (
    bound_acting_for,
)
from vigil.activities.session_tools import SessionTools, ToolAnswer, control_error
from vigil.activities.token_stream import TokenPublisher
from vigil.activities.tools import folded
from vigil.activities.tools import registry as tools
from vigil.activities.tools.runner import WorkerTools
from vigil.schema import event_kinds, names
from vigil.schema.agents import ToolDescriptor, call_digest
from vigil.schema.payloads import (
    CallModelInput,
    CallModelOutput,
    RunToolInput,
    RunToolOutput,
    ToolCallRef,
    preview,
    readable_arguments,
    wire,
)
from vigil.schema.tools import BUILTIN_TOOLS, ToolInfo

log = logging.getLogger("vigil.activities")

# Spans go nowhere unless the worker set up tracing (workers/tracing.py).
_tracer = trace.get_tracer("vigil.activities")


class SessionActivities(SessionTools):
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
        checked: dict[int, dict[str, Any]] | None = None,
    ) -> list[ToolCallRef]:
        """The calls as the workflow sees them. With an agent definition, each carries
        its digest and whether an ``approve_when`` rule of its tool matched. ``checked``,
        when given, gets the parsed arguments of each valid call by its index, so the
        calls folded into this activity are not parsed and checked a second time."""
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
                if error is None:
                    error = control_error(str(call["name"]), args, catalog)
                if error is None and checked is not None:
                    checked[index] = args
            refs.append(
                ToolCallRef(
                    index=index,
                    call_id=wire(call["id"]),
                    # Any name the model chose, bounded: a valid one is short.
                    name=wire(preview(call["name"], 200)),
                    valid=error is None,
                    error=wire(preview(error, 1000)) if error else None,
                    # As a person deciding an approval reads them (letters as written).
                    arguments_preview=wire(preview(readable_arguments(call["arguments"]), 300)),
                    digest=digest,
                    rule_matched=matched,
                )
            )
        return refs

    async def _provider(self, arg: CallModelInput) -> tuple[ModelProvider, str]:
        """The connection's provider; its fallback once the first has failed twice."""
        if arg.connection is None:
            return self.provider, DEFAULT_CONNECTION
        if arg.fallback and activity.info().attempt >= FALLBACK_FROM_ATTEMPT:
            try:
                provider, _ = await self.models.provider(arg.fallback, None)
                return provider, arg.fallback
            except (CredentialError, ConnectionError_) as exc:
                # Waiting for a worker with the fallback would hold a call that the first
                # connection may yet answer: it stays there, its failures counted.
                log.warning("fallback not taken: %s; calling %r again", exc, arg.connection)
        try:
            provider, _ = await self.models.provider(arg.connection, arg.model)
        except (CredentialError, ConnectionError_) as exc:
            # This worker's setup, not the session: waited out until a worker that can
            # serve the connection (or this one, set up again) takes the call.
            raise WorkerNotReady(str(exc)) from None
        return provider, arg.connection

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
        if arg.batch is None:
            return await self._model_step(arg)
        started = time.monotonic()
        # A batch of quick steps outlasts the heartbeat timeout with no wait of its own
        # long enough to heartbeat: it heartbeats throughout (a regular activity).
        async with guard.heartbeating():
            out = await self._model_step(arg)
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
                # ended meanwhile and answered them (UNANSWERED).
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
                if isinstance(exc, ApplicationError) and exc.next_retry_delay is not None:
                    first.handed_back_after = exc.next_retry_delay.total_seconds()
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
            content_preview=wire(preview(msg.content)),
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
            async with guard.heartbeating():
                reply = await self._ask(provider, arg, context, specs)
        except ProviderError as exc:
            metrics.model_failed(agent_id=arg.agent_id, model=arg.model or connection)
            failure = _provider_failure(exc, connection)
            if not failure.non_retryable:
                # Said in one line: the SDK logs a benign failure without its traceback.
                log.warning(
                    "session %s step %s: %s (attempt %s; retried unless the call's attempts "
                    "are spent)",
                    arg.session_id,
                    arg.step,
                    failure.message,
                    activity.info().attempt if activity.in_activity() else 1,
                )
            raise failure from exc
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
        checked: dict[int, dict[str, Any]] = {}
        refs = self._refs(calls, arg.allowed_tools, catalog, checked)
        answers, failed = await self._answers_before_reply(arg, calls, refs, checked, catalog)
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
        if not wrote:
            # Another attempt of this step (one that ran at once with this one) recorded
            # its reply first: that reply, with its answers, is the step's; this one's calls,
            # tokens and text are nowhere in the record, so they are not handed on either.
            async with bound_acting_for(self._engine, arg.agent_id) as db:
                return await self._replay(db, arg, catalog), None, None
        for answer in answers:
            answer.told()
        return (
            CallModelOutput(
                seq=arg.seq,
                content_preview=wire(preview(reply.content)),
                finish_reason=reply.finish_reason,
                tool_calls=refs,
                tokens_in=reply.usage.input_tokens,
                tokens_out=reply.usage.output_tokens,
                cost_usd=cost,
                latency_ms=latency_ms,
                folded=[a.output for a in answers],
            ),
            calls,
            failed,
        )

    async def _answers_before_reply(
        self,
        arg: CallModelInput,
        calls: list[dict[str, Any]],
        refs: list[ToolCallRef],
        checked: dict[int, dict[str, Any]],
        catalog: dict[str, ToolDescriptor] | None,
    ) -> tuple[list[ToolAnswer], _Failed | None]:
        """The answers of the reply's leading folded calls that change nothing anywhere,
        found before the reply is recorded so they are written in its statement: a call
        to a tool that only reads (effects ``none``), or one a built-in refuses by its
        arguments alone (``registry.REFUSALS``: nothing is run). A crash before that
        statement loses nothing (the reply is not recorded either, and the next attempt
        asks again). Stops at the first other call; the calls after it run as before,
        once the reply is recorded. Stops too at a call that fails (an outage of our own
        parts): returned, so that it is handed back to its own activity rather than run a
        second time once the reply is recorded. ``checked``: the valid calls' arguments,
        parsed and checked by ``_refs``."""
        if not arg.fold_tools:
            return [], None
        allowed = set(arg.fold_tools)
        answers: list[ToolAnswer] = []
        for ref, call in zip(refs, calls, strict=True):
            args = checked.get(ref.index)
            if args is None or ref.name not in allowed:
                break
            if not self._changes_nothing(str(call["name"]), args, catalog):
                break
            try:
                with _tracer.start_as_current_span(
                    "RunTool", attributes={"vigil.step": arg.step, "vigil.call_index": ref.index}
                ):
                    answer = await self._tool_answer(
                        folded.call_input(arg, ref.index), calls, before_reply=True, valid_args=args
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
        self, name: str, args: dict[str, Any], catalog: dict[str, ToolDescriptor] | None
    ) -> bool:
        """Whether a call to ``name`` with ``args`` (valid) changes nothing, here or outside."""
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
        return refuse(self.settings, args) is not None


def _spec(name: str) -> Any:
    from vigil.activities.models.base import ToolSpec

    info = BUILTIN_TOOLS[name]
    return ToolSpec(name=info.name, description=info.description, parameters=info.parameters)


class FailedBeforeReply(Exception):
    """A folded call that failed before its reply was recorded, ending the fold there (it
    is not run a second time: the workflow's own ``run_tool`` activity takes it)."""


@dataclass(frozen=True)
class _Failed:
    """A call that failed before its reply was recorded: its index and what it raised."""

    index: int
    error: Exception


def _wire_message(m: ChatMessage) -> ChatMessage:
    """``m`` as it may go on the wire. The record holds text exactly (lone surrogates
    included); what is sent must be valid UTF-8, escaped the same way everywhere so call
    ids still pair up. Nearly always all of it is valid already: then ``m`` itself."""
    texts = [m.content, m.tool_call_id or ""]
    for c in m.tool_calls:
        texts += (c.id, c.name, c.arguments)
    if all(t.isascii() or wire(t) is t for t in texts):
        return m
    return ChatMessage(
        role=m.role,
        content=wire(m.content),
        tool_calls=[
            ToolCall(id=wire(c.id), name=wire(c.name), arguments=wire(c.arguments))
            for c in m.tool_calls
        ],
        tool_call_id=wire(m.tool_call_id) if m.tool_call_id else None,
        name=m.name,
    )


def _descriptor_spec(tool: ToolDescriptor) -> Any:
    from vigil.activities.models.base import ToolSpec

    return ToolSpec(name=tool.name, description=tool.description, parameters=tool.parameters)


def _provider_failure(exc: ProviderError, connection: str = DEFAULT_CONNECTION) -> ApplicationError:
    where = "" if connection == DEFAULT_CONNECTION else f" (connection {connection})"
    # The HTTP status when the provider answered (none: it did not, or not over HTTP).
    details = f"{f' {exc.status}' if exc.status else ''}: {exc.message}{where}"
    if exc.retryable:
        delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
        return ApplicationError(
            f"model provider transient failure{details}",
            type=names.ERR_PROVIDER_TRANSIENT,
            next_retry_delay=delay,
            # Expected of a provider now and then, and retried: not the worker's error. The
            # attempt that gives up is said in full (activities/guard.py).
            category=ApplicationErrorCategory.BENIGN,
        )
    return ApplicationError(
        f"model provider refused the request{details}",
        type=names.ERR_PROVIDER_REJECTED,
        non_retryable=True,
    )
