"""The session's records: its opening, the workflow's queued records, its end and the
outcome's memory (activities of AgentSession, see activities/session.py).

Each write is one transaction, idempotent on its key: a message on (session, seq), an
event on (session, key), the opening on the session's id, the outcome's memory on
``{session}:outcome``; a write of a run that recorded another end of the session is
refused (``record.EndGuard``), and the session ends as the record says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import unicodedata
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from vigil.activities.artifacts.store import ArtifactStore
from vigil.activities.config import ActivitySettings
from vigil.activities.context_cache import ContextCache
from vigil.activities.failures import describe
from vigil.activities.guard import LocalLedgers, guarded
from vigil.activities.memory.provenance import EmbedderMismatch
from vigil.activities.memory.writes import session_gone
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import erasure as erasure_rows
from vigil.activities.record import store as record
from vigil.activities.record.lean import Statements, lean_transaction
from vigil.activities.record.rls import (
    acting_until_the_end,
    lean_acting_for,
)
from vigil.activities.tools import folded
from vigil.schema import event_kinds, names
from vigil.schema.payloads import (
    OpenSessionInput,
    OpenSessionOutput,
    RecordInput,
    RecordOutput,
    RememberInput,
    RememberOutput,
    preview,
)
from vigil.workflows.constants import OPENED_NEXT_SEQ

log = logging.getLogger("vigil.activities")

REMEMBER_INLINE_SECONDS = 10.0
"""How long the outcome's memory may take when it rides with the last records."""


async def _delete_own_run() -> None:
    """Ask Temporal to delete the run of the workflow whose activity this is: it started
    while an erasure of its session (or its agent) was under way, after the erasure had
    listed the runs it deletes, and its start input and search attributes (the goal
    among them) would otherwise outlive the erasure. Temporal terminates the run as it
    deletes it; a failure to ask is logged, and the run then fails as before."""
    info = activity.info()
    try:
        client = activity.client()
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(
                    workflow_id=info.workflow_id or "", run_id=info.workflow_run_id or ""
                ),
            )
        )
    except Exception as exc:  # the refusal below stands either way
        log.warning(
            "session %s was erased after it started; its run could not be deleted: %s",
            info.workflow_id,
            describe(exc),
        )


class SessionRecords:
    """The part of SessionActivities that writes the session's records."""

    # Set by SessionActivities.__init__.
    settings: ActivitySettings
    sessionmaker: async_sessionmaker[DbSession]
    _engine: Any
    store: ArtifactStore
    memory: Any | None
    context_cache: ContextCache
    local_ledgers: LocalLedgers

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
        # In NFKC form before it is cut, as the subject is kept: a goal of characters
        # that NFKC spells longer (one can become eighteen) keeps the subject in bounds.
        goal = " ".join(unicodedata.normalize("NFKC", arg.goal).split())
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
                first_attempt=first_attempt(),
            )
        except ValueError as exc:
            raise ApplicationError(
                str(exc), type=names.ERR_INVALID_INPUT, non_retryable=True
            ) from exc
        except EmbedderMismatch as exc:
            # The agent's memories come from another embedder than this worker's: no
            # vector of this one may join them, now or on a retry here. The session's end
            # stands without its outcome's memory (the workflow logs why).
            raise ApplicationError(
                str(exc), type=names.ERR_EMBEDDER_MISMATCH, non_retryable=True
            ) from exc
        except Exception as exc:
            if not session_gone(exc):
                raise
            # Erased since it ended (its agent erased while a schedule starts its runs):
            # what it would remember goes with it, as its record did.
            log.info("session %s was erased: its outcome is not remembered", arg.session_id)
            return RememberOutput()
        return RememberOutput(memory_id=result.id, action=result.action)

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
        try:
            return await self._opened(arg)
        except record.SessionErased as exc:
            # After the transaction, which holds the erasure's locks: Temporal's answer
            # does not keep an erasure waiting.
            await _delete_own_run()
            raise ApplicationError(
                str(exc), type=names.ERR_INVALID_INPUT, non_retryable=True
            ) from None

    async def _opened(self, arg: OpenSessionInput) -> OpenSessionOutput:
        # One lean transaction: the agent's and the session's rows with the owner's rights
        # (one statement, the version in it), then the goal and its event acting for the
        # agent (one statement) until the transaction ends.
        # No erasure of the session (or its agent) runs meanwhile, and its receipt, if
        # one committed, is read by the opening's statement (in the BEGIN's round trip).
        held = erasure_rows.hold_from_erasure(arg.agent_id, arg.session_id)
        async with lean_transaction(self._engine, then=held) as db:
            try:
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
            except record.EarlierSession as exc:
                raise ApplicationError(
                    str(exc),
                    type=names.ERR_EARLIER_SESSION,
                    non_retryable=True,
                    category=ApplicationErrorCategory.BENIGN,  # said by the workflow's end
                ) from None
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
                # Named once the messages are where they are written: an end after a step
                # it closed has moved past what that step's call recorded.
                guard, events = _end_guard(arg, messages, events)
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
        ``names.ERR_ENDED_IN_RECORD``): the recorded status, summary, step count, tokens
        (in, out) and cost as its details."""
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
            *(
                (int(row.step), int(row.tokens_in), int(row.tokens_out), float(row.cost_usd))
                if row is not None
                else ()
            ),
            type=names.ERR_ENDED_IN_RECORD,
            non_retryable=True,
        )


def _end_guard(
    arg: RecordInput, messages: list[record.NewMessage], events: list[record.NewEvent]
) -> tuple[record.EndGuard | None, list[record.NewEvent]]:
    """The guard of a write of this workflow run (see ``record.EndGuard``; None outside an
    activity), and the events to write: an end write's ``session_ended`` event is given
    the run and the seq of the end's message (the workflow's one system message named
    ``vigil``), which that guard compares. ``messages`` are those the write puts in the
    record, at their final seqs: after ``close_open_step`` moved the end past what the
    open step's call recorded, the seq it is written at, not the one its workflow chose
    (a retried ending moves it to the same seq again)."""
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


def first_attempt() -> bool:
    """Whether this is the running activity's first attempt (a local activity run again
    after its workflow task was lost starts at 1 too: keyed writes still happen once)."""
    return activity.in_activity() and activity.info().attempt == 1
