"""The session's tool calls: ``run_tool`` and the answer of each call, whether its own
activity runs it or the model's call folds it in (activities of AgentSession, see
activities/session.py).

A call's result is recorded at its seq with its ``tool:{step}:{index}`` event, once: a
retried or re-run call returns the recorded result and runs nothing twice. Approvals are
checked against the record (the call's digest, edited arguments against the tool's
schema), the workflow's own tools (``finish``, ``ask_human``, ``wait_until``) are checked
and handed back as a control, and an output too long to keep inline is stored as an
artifact.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry import trace
from temporalio import activity
from temporalio.exceptions import ApplicationError

from vigil.activities import guard, metrics
from vigil.activities.agents import catalog as agent_catalog
from vigil.activities.agents.runtime import AgentVersions
from vigil.activities.failures import outage_of
from vigil.activities.guard import guarded
from vigil.activities.record import store as record
from vigil.activities.record.rls import (
    bound_acting_for,
)
from vigil.activities.session_records import SessionRecords, first_attempt
from vigil.activities.tools import registry
from vigil.activities.tools.python import SessionArtifacts, idempotency_key
from vigil.activities.tools.runner import ToolCallInfo, WorkerTools
from vigil.schema import event_kinds, names
from vigil.schema.agents import ToolDescriptor, call_digest
from vigil.schema.payloads import (
    RunToolInput,
    RunToolOutput,
    ToolControl,
    preview,
    wire,
)
from vigil.schema.tools import BUILTIN_TOOLS
from vigil.schema.transcript import edited_note

log = logging.getLogger("vigil.activities")
# Spans go nowhere unless the worker set up tracing (workers/tracing.py).
_tracer = trace.get_tracer("vigil.activities")


class SessionTools(SessionRecords):
    """The part of SessionActivities that runs tool calls."""

    # Set by SessionActivities.__init__.
    tools: WorkerTools
    http: httpx.AsyncClient
    agents: AgentVersions

    async def _catalog(
        self, agent_id: str, version: int | None
    ) -> dict[str, ToolDescriptor] | None:
        """The pinned version's tool catalog (None for an agent without a definition)."""
        if version is None:
            return None
        return await self.agents.catalog(agent_id, version)

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
        valid_args: dict[str, Any] | None = None,
    ) -> RunToolOutput | ToolAnswer | None:
        """The call run (or refused) and its answer, not yet recorded; or the output
        itself when there is nothing to record (recorded already, or the workflow's
        tool). ``before_reply``: the reply is not recorded yet, so nothing may be written
        anywhere: None instead of an output too long to keep inline (the claim check
        would store it as an artifact). ``valid_args``: the call's own arguments, parsed
        and found valid by the model activity that folds it (not checked again)."""
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
                    seq=arg.seq, ok=ok, preview=wire(preview(by_seq[arg.seq].content))
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

        args, error, rejected = _checked_arguments(arg, call, catalog, valid_args)
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
                async with guard.heartbeating():
                    if tool is None or tool.kind == "builtin":
                        outcome = await self._run_builtin(arg, name, args)
                    else:
                        outcome = await self._run_catalog(arg, tool, call_id, args)
                ok, text, data = True, outcome.text, outcome.data
            except registry.ToolFailed as exc:
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
            # An attempt past the first may have run the tool before (a lost worker, an
            # outage as its answer was written): the record says which one answered.
            "attempt": activity.info().attempt if activity.in_activity() else 1,
        }
        return ToolAnswer(
            output=RunToolOutput(
                seq=arg.seq, ok=ok, preview=wire(preview(text)), artifact_sha256=sha
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
    ) -> registry.ToolOutcome:
        ctx = registry.BuiltinContext(
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            step=arg.step,
            settings=self.settings,
            store=self.store,
            sessionmaker=self.sessionmaker,
            http=self.http,
            memory=self.memory,
            call_index=arg.call_index,
            first_attempt=first_attempt(),
        )
        return await registry.IMPLEMENTATIONS[name](ctx, args)

    async def _run_catalog(
        self, arg: RunToolInput, tool: ToolDescriptor, call_id: str, args: dict[str, Any]
    ) -> registry.ToolOutcome:
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
            counted=guard.counted_attempt(),
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


@dataclass
class ToolAnswer:
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


def _edit_fields(original: Any, by: str | None) -> dict[str, Any]:
    """What the tool_call event adds for a call a human edited: the model's arguments
    (parsed when they are JSON) and the editor."""
    parsed, _error = registry.parse_arguments(str(original))
    return {"original_arguments": parsed if parsed is not None else original, "edited_by": by}


def _printable(name: str) -> str:
    return preview(wire(name).replace("\x00", "\\x00"), 200)


def _checked_arguments(
    arg: RunToolInput,
    call: dict[str, Any],
    catalog: dict[str, ToolDescriptor] | None,
    valid_args: dict[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, str | None, bool]:
    """The call's arguments (a human's edit when there is one), why they may not run, and
    whether that is the workflow's refusal. ``valid_args``: the call's own arguments,
    already parsed and found valid (schema and workflow checks both)."""
    name = str(call["name"])
    args: dict[str, Any] | None
    if valid_args is not None and arg.edited_arguments is None:
        args, error = valid_args, None
    else:
        if arg.edited_arguments is not None:
            error = registry.check_shape(arg.edited_arguments)
            args = None if error else arg.edited_arguments
        else:
            args, error = registry.parse_arguments(str(call["arguments"]))
        if args is not None and error is None:
            error = (
                registry.validate(name, args)
                if catalog is None
                else agent_catalog.call_error(catalog, name, args)
            )
        if error is None and args is not None:
            error = control_error(name, args, catalog)
    # A call the workflow refuses (a human's rejection, or a tool outside the session's
    # policy) is never run; its own argument errors, if any, are the more useful answer.
    rejected = error is None and arg.rejected_reason is not None
    if rejected:
        error = arg.rejected_reason
    return args, error, rejected


def control_error(
    name: str, args: dict[str, Any], catalog: dict[str, ToolDescriptor] | None
) -> str | None:
    """Why a call whose arguments fit its schema still cannot be carried out by the
    workflow (a wait whose ``until`` is no time: the schema does not check a time's
    format), as an argument error for the model; None: it can."""
    if name == "wait_until" and _workflow_handled(name, catalog):
        return registry.wake_time_error(args)
    return None


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
            summary=wire(str(args.get("summary", ""))),
            succeeded=succeeded if isinstance(succeeded, bool) else None,
        )
    if name == "ask_human":
        return ToolControl(kind="ask_human", question=wire(str(args["question"])))
    seconds, when = registry.parse_wake_time(args)
    return ToolControl(kind="wait_until", seconds=seconds, wake_at=when)
