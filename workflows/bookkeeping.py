"""What a session queues for the record and shows Temporal (deterministic).

The part of AgentSession that keeps the record's queue: messages, events and the session
row's changes wait here until the next activity carries them (a model call, or a record
activity of their own, ``_flush``); and what Temporal shows of the session, its search
attributes and current details, kept in step with it.

Deterministic code only: this is part of the workflow (see workflows/session.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from vigil.schema import event_kinds, names
from vigil.schema.agents import AgentRuntime
from vigil.schema.payloads import (
    EventIn,
    MessageIn,
    OpenSessionInput,
    RecordInput,
    RecordOutput,
    RememberInput,
    SessionStatus,
    SessionUpdate,
    ToolCallRef,
    bounded_preview,
    preview,
)
from vigil.workflows import agents as agent_policy
from vigil.workflows import constants as c
from vigil.workflows import folding, summaries, times
from vigil.workflows.hand_over import HandOverWhileWaiting

M = TypeVar("M", bound=BaseModel)


class Bookkeeping(HandOverWhileWaiting):
    """The part of AgentSession that queues records and publishes the session."""

    # Provided by AgentSession.
    _msgs: list[MessageIn]
    _events: list[EventIn]
    _session_update: SessionUpdate | None
    _opening: OpenSessionInput | None
    _closing_seq: int | None
    _quiet_steps: bool
    _changed_attributes: bool
    _published_at: datetime | None
    _published_agent: str | None
    _published_goal: str | None
    _runtime: AgentRuntime | None
    _fold: bool
    _lean: bool
    _local_books: bool

    async def _act(
        self,
        name: str,
        arg: BaseModel,
        result: type[M],
        *,
        summary: str,
        limit: timedelta,
        retry: Any,
        heartbeat: bool = False,
        task_queue: str | None = None,
        schedule_to_start: timedelta | None = None,
        bookkeeping: bool = False,
    ) -> M:
        """Run an activity. ``bookkeeping``: opening the session, a record or the outcome's
        memory, which run as local activities in new sessions (see _local_bookkeeping)."""
        if bookkeeping and self._local_bookkeeping():
            return await folding.run_local(
                name,
                arg,
                result,
                limit=limit,
                retry=retry,
                summary=summary,
                implied=self._lean,
            )
        out: M = await workflow.execute_activity(
            name,
            arg,
            result_type=result,
            task_queue=task_queue,
            start_to_close_timeout=limit,
            schedule_to_start_timeout=schedule_to_start,
            retry_policy=retry,
            heartbeat_timeout=times.heartbeat(self._arg.heartbeat_seconds, limit)
            if heartbeat
            else None,
            summary=summary,
        )
        return out

    def _patched(self, patch: str) -> bool:
        """Whether this run takes ``patch``'s path. Sessions under lean bookkeeping take
        every patch older than it without asking: each patch asked costs the history a
        marker and a search attribute update."""
        return self._lean or workflow.patched(patch)

    def _local_bookkeeping(self) -> bool:
        """Whether this session's bookkeeping runs as local activities: every session
        under local bookkeeping does (short idempotent writes: no activity task through
        the server for them); an older one when its agent's model calls do
        (``execution = "local"``, which needs folded steps) and it is new enough. The
        older patch is asked only then, so older sessions of the default mode carry no
        marker for it."""
        if self._local_books:
            return True
        return (
            self._fold
            and folding.local_model_call(self._runtime)
            and self._patched(names.PATCH_LOCAL_RECORDS)
        )

    def _budget_end(self) -> tuple[SessionStatus, str] | None:
        raise NotImplementedError

    @property
    def _sid(self) -> str:
        return workflow.info().workflow_id

    def _update(self, **fields: Any) -> None:
        """Merge a change of the session row into the next record activity."""
        base = self._session_update or SessionUpdate()
        self._session_update = base.model_copy(update=fields)

    def _tool_message(self, seq: int, step: int, call: ToolCallRef, text: str) -> None:
        self._open_calls.pop(call.index, None)
        self._msgs.append(
            MessageIn(
                seq=seq,
                role="tool",
                content=text,
                step=step,
                name=call.name,
                tool_call_id=call.call_id,
            )
        )

    def _event(
        self,
        key: str,
        kind: str,
        step: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        self._events.append(
            EventIn(
                key=key, kind=kind, step=step, actor=actor, reason=reason, payload=payload or {}
            )
        )

    def _drain_inbox(self) -> None:
        """Human messages join the transcript between steps, never inside a tool exchange.
        A conversation that waited for a message has one to answer now."""
        if (
            self._inbox.items
            and self._c.awaiting_message
            and workflow.patched(names.PATCH_CONVERSATION_LATE_MESSAGE)
        ):
            self._c.awaiting_message = False
            self._c.idle_until = None
        while self._inbox.items:
            text, by, at = self._inbox.items.pop(0)
            seq = self._c.next_seq
            self._c.next_seq += 1
            self._msgs.append(
                MessageIn(seq=seq, role="user", content=text, step=self._c.step, name=by)
            )
            self._event(
                f"human:message:{seq}",
                event_kinds.HUMAN_MESSAGE,
                self._c.step,
                actor=by,
                payload={"seq": seq, "at": at.isoformat()},
            )

    def _message_before_end(self) -> bool:
        """Whether a message (or a new goal) came while the step that would end the
        session ran, and its budgets allow another step: the session then goes on for one
        more step, which answers it. Without a step left it ends as the step said, the
        message in the transcript before its end (``_finish``)."""
        return (
            bool(self._inbox.items)
            and self._budget_end() is None
            and workflow.patched(names.PATCH_MESSAGE_BEFORE_END)
        )

    def _has_unrecorded(self) -> bool:
        return bool(self._msgs or self._events or self._session_update or self._opening)

    def _take_records(self) -> RecordInput | None:
        """What is queued for the record, taken out of the queue (None: nothing)."""
        if not self._has_unrecorded():
            return None
        records = RecordInput(
            session_id=self._sid,
            agent_id=self._arg.agent_id,
            messages=list(self._msgs),
            events=list(self._events),
            session=self._session_update,
            open_step_seq=self._closing_seq,
            open=self._opening,
        )
        self._msgs.clear()
        self._events.clear()
        self._session_update = None
        self._opening = None
        return records

    def _restore_records(self, records: RecordInput) -> None:
        """Put back what a cancelled write carried, before anything queued since."""
        self._msgs[:0] = records.messages
        self._events[:0] = records.events
        self._opening = records.open
        update = records.session
        if update is not None:
            later = self._session_update
            self._session_update = (
                update.model_copy(update=later.model_dump(exclude_unset=True))
                if later is not None
                else update
            )

    async def _flush(self, remember: RememberInput | None = None) -> RecordOutput | None:
        """Write queued messages, events and the session row's changes in one activity
        (``remember``: and then try the outcome's memory); what it wrote (None: nothing
        was queued)."""
        records = self._take_records()
        if records is None:
            if remember is None:
                return None
            records = RecordInput(session_id=self._sid, agent_id=self._arg.agent_id)
        records.remember = remember
        try:
            written = await self._act(
                names.ACT_RECORD,
                records,
                RecordOutput,
                summary=summaries.record(
                    records.messages,
                    records.events,
                    opens=records.open is not None,
                    remembers=remember is not None,
                ),
                limit=c.RECORD_START_TO_CLOSE,
                retry=c.RECORD_RETRY,
                bookkeeping=True,
            )
        except BaseException:
            # Cancelled mid-write: keep everything for the final flush (writes are
            # idempotent, so what did land is not duplicated).
            records.remember = None
            self._restore_records(records)
            raise
        if records.open_step_seq is not None:
            self._closing_seq = None
        return written

    def _set_status(self, status: SessionStatus) -> None:
        if status == self._status:
            return
        self._status = status
        self._update(status=status, step=self._c.step)
        self._publish()

    def _publish(self, *, step_only: bool = False) -> None:
        """Keep search attributes and the UI's current details in step with the session.
        ``step_only``: only the step moved (a step's end); with quiet steps its search
        attribute then waits until a second of workflow time has passed since the last
        update (every status change, wait and end updates it)."""
        now = workflow.now()
        if (
            step_only
            and self._quiet_steps
            and self._published_at is not None
            and now - self._published_at < c.STEP_PUBLISH_EVERY
        ):
            self._set_details()
            return
        self._published_at = now
        # Status and step always; agent and goal only when they change, so a long goal
        # does not add a kilobyte to history at every step.
        updates: list[SearchAttributeUpdate[Any]] = [
            names.SA_STATUS.value_set(self._status.value),
            names.SA_STEP.value_set(self._c.step),
        ]
        # Within Temporal's limit for a value, or the server ends the session (terminated,
        # its record left open). A value under the limit is what it always was.
        goal = bounded_preview(self._c.goal)
        if self._published_agent != self._arg.agent_id:
            updates.append(names.SA_AGENT.value_set(self._arg.agent_id))
            self._published_agent = self._arg.agent_id
        if self._published_goal != goal:
            updates.append(names.SA_GOAL.value_set(goal))
            self._published_goal = goal
        if self._changed_attributes:
            # What the run holds already (set by its start, or by an update) is not set
            # again: a session vigil's client started makes no update until it moves.
            held = workflow.info().typed_search_attributes
            updates = [u for u in updates if held.get(u.key) != u.value]
        if updates:
            workflow.upsert_search_attributes(updates)
        self._set_details()

    def _set_details(self) -> None:
        """The session as Temporal UI shows it (kept by the worker, not in history)."""
        details = (
            f"**{self._status.value}** at step {self._c.step} — goal: {preview(self._c.goal, 300)}"
        )
        if self._c.last_message:
            details += f"\n\nlast reply: {preview(self._c.last_message, 300)}"
        for approval in self._approvals.values():
            if approval.decision is None:
                details += summaries.approval_details(
                    self._sid,
                    workflow.info().namespace,
                    approval.pending,
                    self._arg.temporal_address,
                )
        workflow.set_current_details(details)

    def _allowed_tools(self) -> list[str]:
        return agent_policy.tool_names(self._runtime, self._arg.policy)
