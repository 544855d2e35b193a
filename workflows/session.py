"""AgentSession: one durable agent session (deterministic orchestration only).

The loop: call the model -> policy -> (wait for a human) -> run tools -> repeat, until the
model finishes, a budget runs out, or a human stops it. The workflow never carries the
transcript: activities read and write PostgreSQL by reference (session id, seq), so each
step adds a small, constant amount to history however long the conversation grows.

This module holds the loop, the steps, the ending and the agent's definition. The class is
built in layers, each a module of its own: hand_over.py (continue-as-new while waiting),
bookkeeping.py (the record's queue, search attributes and details), human_control.py
(signals, updates, the state query) and waits.py (approvals, pauses, sleeps, questions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from vigil.schema import cancel_reason, event_kinds, names
from vigil.schema.agents import AgentRuntime, ResolveAgentInput, call_digest
from vigil.schema.payloads import (
    Ack,
    CallModelInput,
    CallModelOutput,
    CarriedWait,
    EventIn,
    MessageIn,
    OpenSessionInput,
    OpenSessionOutput,
    RecordOutput,
    RememberInput,
    RememberOutput,
    RunToolInput,
    RunToolOutput,
    SessionCarry,
    SessionResult,
    SessionStatus,
    SessionUpdate,
    StartSessionInput,
    StepBatch,
    ToolCallRef,
    preview,
)
from vigil.workflows import agents as agent_policy
from vigil.workflows import constants as c
from vigil.workflows import folding, retries, summaries, times, tool_routing
from vigil.workflows.hand_over import Approval, Inbox
from vigil.workflows.waits import SessionEnded, Waits

M = TypeVar("M", bound=BaseModel)


class RecordedEnd(NamedTuple):
    """The end the record holds, as the activity that found it told (``_recorded_end``)."""

    status: SessionStatus
    summary: str
    counts: tuple[int, int, int, float] | None
    """Its steps, tokens in and out, and cost; None from activities before 2026-12-06."""


def _recorded_end(exc: BaseException) -> RecordedEnd | None:
    """The end the record holds, when an activity refused to write for that reason."""
    cause = exc.cause if isinstance(exc, ActivityError) else None
    if not isinstance(cause, ApplicationError) or cause.type != names.ERR_ENDED_IN_RECORD:
        return None
    details = list(cause.details)
    try:
        status = SessionStatus(str(details[0]))
    except (IndexError, ValueError):
        status = SessionStatus.COMPLETED
    summary = str(details[1]) if len(details) > 1 else ""
    counts = details[2:6]
    whole = len(counts) == 4 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in counts
    )
    return RecordedEnd(
        status,
        summary,
        (int(counts[0]), int(counts[1]), int(counts[2]), float(counts[3])) if whole else None,
    )


def _refuse_an_earlier_sessions_record(exc: BaseException) -> None:
    """End the run, failed, when its opening found its id's record opened by an earlier
    workflow (``names.ERR_EARLIER_SESSION``): nothing of this run goes there."""
    cause = exc.cause if isinstance(exc, ActivityError) else None
    if isinstance(cause, ApplicationError) and cause.type == names.ERR_EARLIER_SESSION:
        raise ApplicationError(
            cause.message, type=names.ERR_EARLIER_SESSION, non_retryable=True
        ) from exc


NEXT_MESSAGE = "the next message of the conversation"
NOT_FINISHED = "not finished: a message came while this step ran; it follows, answer it first"


@workflow.defn(name=names.WORKFLOW_SESSION)
class AgentSession(Waits):
    @workflow.init
    def __init__(self, arg: StartSessionInput) -> None:
        self._arg = arg
        self._c = arg.carry.model_copy() if arg.carry else SessionCarry(goal=arg.goal)
        self._status = SessionStatus.PAUSED if self._c.paused else SessionStatus.RUNNING
        self._approvals: dict[str, Approval] = {}
        self._inbox = Inbox()
        self._events: list[EventIn] = []
        self._wake_by: str | None = None
        self._rejected_inputs = 0
        self._signals = 0
        """Signals this run has handled (numbers the undecryptable ones' markers)."""
        self._taken_requests: dict[str, Ack] = {}
        """The answers to the controls this run took that named a request id, newest last
        (at most ``MAX_TAKEN_REQUESTS``): the same request again is answered, not taken."""
        self._waiting_for: str | None = None
        self._answer_from: int | None = None
        """While an ask_human question waits: how many queued messages came before it (the
        next one is its answer)."""
        self._run_start_step = self._c.step
        self._session_update: SessionUpdate | None = None
        self._msgs: list[MessageIn] = []
        self._published_agent: str | None = None
        self._published_goal: str | None = None
        self._published_at: datetime | None = None
        """When the search attributes were last updated (workflow time)."""
        self._quiet_steps = False
        """Whether a step updates the step's search attribute only now and then
        (``PATCH_QUIET_STEPS``)."""
        self._changed_attributes = False
        """Whether an update of the search attributes carries only what it changes, and
        none is made when nothing changes (``PATCH_START_ATTRIBUTES``)."""
        self._default_batches = False
        """Whether a default-mode model call may take a step batch
        (``PATCH_DEFAULT_STEP_BATCHES``; new sessions)."""
        # What the transcript still owes if the session ends mid-step: the model reply being
        # awaited and the tool calls without a result (with their seq once reserved).
        self._open_model_seq: int | None = None
        self._open_step = 0
        self._open_calls: dict[int, tuple[ToolCallRef, int | None]] = {}
        self._tool_running: int | None = None
        """The seq of the call whose run_tool activity was begun and has not returned."""
        self._model_seq = 0
        self._said: str | None = None
        """The model's words of this step, for the summary of its first tool call (UI)."""
        """The assistant message of the step being run (its tool calls)."""
        self._protect = False
        self._run_start_size = 0
        # A run that took over a wait from the last one (see workflows/hand_over.py).
        self._resumed_wait = self._take_over()
        # The pinned agent definition (None until resolved; always None when replaying a
        # history from before agent definitions).
        self._runtime: AgentRuntime | None = None
        self._ended_as_recorded = False
        """Ended as the record says (``_as_recorded``), not as this path decided."""
        self._moving_to: int | None = None
        """The version a redirect's move reads now (``_switch_agent``), while it does."""
        self._bind_calls = False
        """Approvals bound to the call's digest, edited arguments checked (new sessions)."""
        self._tool_queues: tool_routing.QueueProbe | None = None
        """Tool workers' queues probed, unserved calls answered as tool errors (new sessions)."""
        self._editors: dict[int, str | None] = {}
        """Who edited the arguments of the step's approved calls, by call index."""
        self._fold = False
        """One round trip per step: tool calls folded into call_model (new sessions)."""
        self._folded: dict[int, RunToolOutput] = {}
        """The step's calls call_model already ran, by call index."""
        self._closing_seq: int | None = None
        """The assistant seq of a folded step the session ended inside (see _flush)."""
        self._lean = False
        """Lean bookkeeping (new sessions): the agent resolved by a local activity, the
        session opened by its first records, its outcome remembered by its last."""
        self._local_books = False
        """Local bookkeeping in every mode (new sessions): records and the outcome's memory
        as local activities, the default mode's too."""
        self._opening: OpenSessionInput | None = None
        """The session's opening, until the first records carry it (lean bookkeeping)."""
        self._settled = False
        """Whether this run has decided which patches it takes (``_settle``)."""

    # --- the loop ---------------------------------------------------------------------

    @workflow.run
    async def run(self, arg: StartSessionInput) -> SessionResult:
        info = workflow.info()
        self._settle()
        cancelled: BaseException | None = None
        if self._bind_calls:
            try:
                await self._resolve_agent()
            except (asyncio.CancelledError, ActivityError) as exc:
                # Cancelled before it read its agent: it still ends as any cancelled
                # session does, in the record too (sessions from before left no record).
                # The cancel is taken: the definition is read again, so the opening names
                # the version and the end reaches the agent's webhooks.
                if not (
                    is_cancelled_exception(exc)
                    and self._lean
                    and workflow.patched(names.PATCH_CANCEL_AT_THE_START)
                ):
                    raise
                cancelled = exc
                await self._resolve_agent()
        if arg.carry is None:
            opening = OpenSessionInput(
                session_id=self._sid,
                agent_id=arg.agent_id,
                goal=arg.goal,
                system_prompt=self._arg.system_prompt,
                schedule_id=arg.schedule_id,
                agent_version=self._c.agent_version,
                started_at=workflow.info().workflow_start_time,
            )
            if self._lean:
                # Opened by the first records (the first model call, or the record written
                # before any wait or the end), before anything else they write.
                self._opening = opening
                self._c.next_seq = max(self._c.next_seq, c.OPENED_NEXT_SEQ)
            else:
                opened = await self._act(
                    names.ACT_OPEN_SESSION,
                    opening,
                    OpenSessionOutput,
                    summary="open session",
                    limit=c.RECORD_START_TO_CLOSE,
                    retry=c.RECORD_RETRY,
                    bookkeeping=True,
                )
                self._c.next_seq = max(self._c.next_seq, opened.next_seq)
            # Any number: past the year 9999 or NaN is the end of 9999, a deadline without
            # a time zone UTC (workflows/times.py); vigil's faces refuse them earlier.
            budget = self._arg.budget
            if budget.deadline is not None:
                self._c.deadline = times.aware(budget.deadline)
            if budget.max_seconds is not None:
                by_seconds = times.later(workflow.now(), budget.max_seconds)
                self._c.deadline = min(self._c.deadline or by_seconds, by_seconds)
        else:
            # The status too: a pause that landed during the hand-over starts this run paused.
            self._update(run_count=self._c.run_index, status=self._status, step=self._c.step)
        self._publish()
        workflow.logger.info(
            "session run %s started at step %s",
            self._c.run_index,
            self._c.step,
            extra={"session_id": info.workflow_id},
        )
        try:
            if cancelled is not None:
                raise cancelled
            if self._resumed_wait is not None:
                await self._resume_step(self._resumed_wait)
            return await self._loop()
        except SessionEnded as ended:
            return await self._finish(ended.status, ended.summary)
        except (asyncio.CancelledError, ActivityError) as exc:
            recorded = _recorded_end(exc)
            if recorded is not None:
                return await self._as_recorded(recorded)
            _refuse_an_earlier_sessions_record(exc)
            if not is_cancelled_exception(exc):
                return await self._failed(exc)
            # Temporal's cancel: while awaiting a timer or condition it arrives as
            # CancelledError, while awaiting an activity as ActivityError(CancelledError).
            # Re-raising either marks the workflow Cancelled.
            by = why = actor = None
            if self._patched(names.PATCH_CANCEL_ACTOR):  # who and why, in the record
                by, why = cancel_reason.parse(workflow.cancellation_reason(), self._arg.schedule_id)
                actor = by or cancel_reason.UNNAMED
            summary = cancel_reason.summary(by, why)
            result = await self._finish(SessionStatus.CANCELLED, summary, actor=actor, reason=why)
            if self._ended_as_recorded:
                return result  # the record's end stands, not the cancel
            raise

    def _settle(self) -> None:
        """Decide which patches this run takes: first thing in ``run``, or earlier in a
        signal handled before ``run`` started (``_input_before_run``). Once a run."""
        if self._settled:
            return
        self._settled = True
        # Asked first, newest first: a session that sets only changed search attributes
        # has quiet steps, one with quiet steps is under local bookkeeping, one under
        # local bookkeeping under lean bookkeeping too, and one under lean bookkeeping
        # takes every earlier patch's path without asking for it (see _patched). A new
        # session carries one marker, the first one: default-mode step batches imply
        # changed search attributes.
        self._default_batches = workflow.patched(names.PATCH_DEFAULT_STEP_BATCHES)
        self._changed_attributes = self._default_batches or workflow.patched(
            names.PATCH_START_ATTRIBUTES
        )
        self._quiet_steps = self._changed_attributes or workflow.patched(names.PATCH_QUIET_STEPS)
        self._local_books = self._quiet_steps or workflow.patched(names.PATCH_LOCAL_BOOKKEEPING)
        self._lean = self._local_books or workflow.patched(names.PATCH_LEAN_BOOKKEEPING)
        # Sessions started by older code replay without this marker: they never hand over
        # while waiting, nor on their history's size between steps.
        self._protect = self._patched(names.PATCH_HAND_OVER_WHILE_WAITING)
        self._run_start_size = workflow.info().get_current_history_size()
        self._fold = self._patched(names.PATCH_FOLDED_STEP)
        if self._patched(names.PATCH_AGENT_DEFINITIONS):
            self._bind_calls = True
            if self._patched(names.PATCH_TOOL_WORKERS):
                self._tool_queues = tool_routing.QueueProbe()

    def _rules_over_never(self) -> bool:
        """Whether a tool's ``approve_when`` rules ask for approval when it says ``never``
        (new sessions; asked only where such a tool is about)."""
        return workflow.patched(names.PATCH_RULES_OVER_NEVER)

    def _input_before_run(self) -> None:
        """A signal handled before ``run`` started (Temporal runs a first task's handlers
        first): the run settles its patches now, so the signal is checked as any later
        one is. Histories from before replay as they ran."""
        if not self._settled and workflow.patched(names.PATCH_INPUT_BEFORE_RUN):
            self._settle()

    async def _failed(self, exc: BaseException) -> SessionResult:
        """An activity failed for good (retries exhausted or a permanent error)."""
        if isinstance(exc, ActivityError):
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause)
        else:
            cause = str(exc)
        result = await self._finish(SessionStatus.FAILED, f"failed: {cause}")
        if self._ended_as_recorded:
            return result  # the record's end stands, not this failure
        raise ApplicationError(
            f"session failed: {cause}", type=names.ERR_SESSION_FAILED, non_retryable=True
        ) from exc

    async def _loop(self) -> SessionResult:
        while True:
            self._drain_inbox()
            if not self._fold:
                await self._flush()  # folded steps carry the records into call_model
            self._check_budgets()
            if self._c.paused:
                await self._hold_while_paused()
                continue
            if self._should_continue_as_new():
                await self._hand_over()
            if self._c.agent_switch is not None:
                await self._switch_agent(*self._c.agent_switch)
                continue
            if self._c.awaiting_message:
                await self._await_next_message()
                continue  # the message joins the transcript at the top
            await self._step()

    async def _await_next_message(self) -> None:
        """A conversation between messages: waits (across runs, when its history grows
        heavy meanwhile) until a message comes, the conversation's idle time passes (it
        ends completed; paused, it is held until the resume and waits its idle time again)
        or the deadline does."""
        self._set_status(SessionStatus.WAITING_HUMAN)
        self._waiting_for = NEXT_MESSAGE
        idle = self._arg.conversation_idle_seconds
        seconds = c.CONVERSATION_IDLE.total_seconds() if idle is None else idle
        if self._c.idle_until is None and workflow.patched(names.PATCH_CONVERSATION_IDLE):
            # Carried across runs: a hand-over while waiting does not restart the clock.
            self._c.idle_until = times.later(workflow.now(), seconds)
        await self._flush()
        got = await self._wait(
            lambda: bool(self._inbox.items), until=self._c.idle_until, summary=NEXT_MESSAGE
        )
        self._waiting_for = None
        if got:
            self._c.awaiting_message = False
            self._c.idle_until = None
            self._set_status(SessionStatus.RUNNING)
            return
        idle_until = self._c.idle_until
        if idle_until is not None and workflow.now() >= idle_until and not self._deadline_passed():
            if self._c.paused and workflow.patched(names.PATCH_PAUSE_HOLDS_IDLE):
                # Paused: the conversation is held until the resume, then waits its idle
                # time again (the loop holds it, and this wait starts a new clock).
                self._c.idle_until = None
                return
            self._event(
                "conversation:idle",
                event_kinds.CONVERSATION_IDLE,
                self._c.step,
                payload={"idle_seconds": seconds, "at": idle_until.isoformat()},
            )
            raise SessionEnded(
                SessionStatus.COMPLETED,
                f"the conversation ended idle: no message for {seconds:g} s after the last answer",
            )

    async def _hand_over(self) -> None:
        """Continue-as-new without losing what humans sent during the last awaits."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not (self._inbox.items or self._has_unrecorded()):
                break
            # Signals handled while recording are recorded too before the run ends;
            # messages join the transcript here, as they would at the top of the loop.
            self._drain_inbox()
            await self._flush()
        self._c.rejected_inputs = self._rejected_inputs
        self._carry_requests()
        self._c.run_index += 1
        workflow.continue_as_new(self._next_input())

    async def _step(self) -> None:
        """The next step; and at once the step after it when a batch handed that back
        (begun and failed: it is retried before anything else, as a failed call is), once
        the time its failure asked for passed (a provider's Retry-After)."""
        if self._c.step_not_before is not None:
            # The run before handed over while the step waited: it waits out the rest.
            await self._provider_wait(self._c.step_not_before)
        while (after := await self._one_step()) is not None:
            if after > 0 and workflow.patched(names.PATCH_HANDED_BACK_WAITS):
                until = times.later(workflow.now(), after)
                if workflow.patched(names.PATCH_CARRIED_PROVIDER_WAIT):
                    self._c.step_not_before = until  # carried if the run hands over
                await self._provider_wait(until)

    async def _provider_wait(self, until: datetime) -> None:
        """A wait as any other: bounded by the session's deadline, input recorded as it
        comes; the step is taken at once after it, within the budgets."""
        await self._wait(lambda: False, until=until, summary="the model provider asked to wait")
        self._c.step_not_before = None
        self._check_budgets()

    async def _one_step(self) -> float | None:
        """One model call's steps; None, or the seconds to wait before the step it handed
        back (0: none asked)."""
        step = self._c.step + 1
        model_seq = self._c.next_seq
        # Reserved before the call: if the session ends while the model answers, `_finish`
        # fills this seq, so the transcript never has a gap.
        self._c.next_seq = model_seq + 1
        self._open_model_seq, self._open_step = model_seq, step
        allowed = self._allowed_tools()
        retry, budget = retries.budgeted(
            c.MODEL_RETRY, self._arg.policy.model_max_attempts, implied=self._lean
        )
        arg = CallModelInput(
            session_id=self._sid,
            agent_id=self._arg.agent_id,
            step=step,
            seq=model_seq,
            allowed_tools=allowed,
            context_messages=self._arg.context_messages,
            max_tokens=self._arg.max_tokens_per_call,
            max_failures=budget,
            **agent_policy.model_call_fields(self._runtime),
        )
        if self._fold:
            out = await self._folded_model_call(arg, retry)
            self._stamp_call_events(step + len(out.more))
        else:
            out = await self._act(
                names.ACT_CALL_MODEL,
                arg,
                CallModelOutput,
                summary=f"step {step}: model",
                limit=c.MODEL_START_TO_CLOSE,
                retry=retry,
                heartbeat=True,
            )
        await self._took(step, model_seq, out)
        for more in out.more:
            # A batch's further steps: each plain, taken where this loop would have
            # taken it (nothing came in between: the workflow learns of input only once
            # the call returns), so each is applied as a step of its own.
            step, model_seq = self._c.step + 1, self._c.next_seq
            if more.seq != model_seq:  # never expected: ends the session with its record
                raise SessionEnded(
                    SessionStatus.FAILED,
                    f"step {step} of a batch recorded at seq {more.seq}, not {model_seq}",
                )
            self._c.next_seq = model_seq + 1
            await self._took(step, model_seq, more)
        if not out.handed_back:
            return None
        return out.handed_back_after or 0.0

    def _stamp_call_events(self, last_step: int) -> None:
        """Events queued while a folded model call ran (it took every event queued before
        it: these came during it, a human's pause, redirect or wake, a refused signal,
        which the workflow hears of while the call runs) carry the call's last step (its
        batch's, when it took one), after which the session acts on them, not the step
        before the call. Only their records change (what the next activity writes), not
        the workflow's commands."""
        for i in range(len(self._events)):
            event = self._events[i]
            if event.step < last_step:
                self._events[i] = event.model_copy(update={"step": last_step})

    async def _took(self, step: int, model_seq: int, out: CallModelOutput) -> None:
        """What a step's model call answered, applied: the session's counts, then the
        end, the wait for the next message, or the reply's tool calls (those the call ran
        itself, ``out.folded``, only closed here)."""
        self._folded = {i: done for i, done in enumerate(out.folded)}
        self._open_model_seq = None
        self._model_seq = model_seq
        self._said = out.content_preview
        self._open_calls = {call.index: (call, None) for call in out.tool_calls}
        self._c.step = step
        self._c.tokens_in += out.tokens_in
        self._c.tokens_out += out.tokens_out
        self._c.cost_usd += out.cost_usd
        if out.content_preview:
            self._c.last_message = out.content_preview
        self._publish(step_only=True)
        if not out.tool_calls:
            if self._arg.conversation:  # the answer to the last message: wait for the next
                self._c.awaiting_message = True
                return
            if self._message_before_end():
                return  # the message joins the transcript at the top, and the model answers
            raise SessionEnded(SessionStatus.COMPLETED, out.content_preview or "done")
        if all(not call.valid for call in out.tool_calls):
            self._c.malformed_streak += 1
        else:
            self._c.malformed_streak = 0
        await self._run_calls(step, model_seq, out.tool_calls)

    async def _folded_model_call(self, arg: CallModelInput, retry: Any) -> CallModelOutput:
        """The model call of a folded step: what is queued for the record rides along, and
        the reply's leading no-approval calls come back already run."""
        records = self._take_records()
        arg.fold_tools = folding.foldable_tools(
            self._runtime, self._arg.policy, arg.allowed_tools, self._rules_over_never
        )
        arg.records = records
        try:
            summary = summaries.model_call(arg.step, records.events if records else [])
            if folding.local_model_call(self._runtime):
                limit = self._batched(
                    arg,
                    lambda: self._changed_attributes or workflow.patched(names.PATCH_STEP_BATCHES),
                )
                # No heartbeat: a lost worker is noticed by its workflow task timing out,
                # and the next worker runs the call again (the recorded reply is returned).
                try:
                    return await folding.run_local(
                        names.ACT_CALL_MODEL,
                        arg,
                        CallModelOutput,
                        limit=limit,
                        retry=retry,
                        summary=summary,
                        implied=self._lean,
                    )
                except ActivityError as exc:
                    if not folding.worker_not_ready(exc):
                        raise
                # This worker is not set up for the call: as a regular activity, a worker
                # that is takes it (the call waits for one, as in the default mode).
                arg.batch = None
                limit = c.MODEL_START_TO_CLOSE
            else:
                limit = self._batched(arg, lambda: self._default_batches)
            out = await self._act(
                names.ACT_CALL_MODEL,
                arg,
                CallModelOutput,
                summary=summary,
                limit=limit,
                retry=retry,
                heartbeat=True,
            )
        except BaseException:
            if records is not None:
                self._restore_records(records)  # for the final flush (writes are idempotent)
            raise
        return out

    def _batched(self, arg: CallModelInput, allowed: Callable[[], bool]) -> timedelta:
        """The model call's time limit, with a step batch set on ``arg`` when ``_batch``
        gives one and ``allowed()`` (asked only then: it may ask a patch)."""
        batch = self._batch(arg.step)
        if batch is None or not allowed():
            return c.MODEL_START_TO_CLOSE
        arg.batch = batch
        return c.MODEL_START_TO_CLOSE + timedelta(milliseconds=batch.window_ms)

    def _batch(self, step: int) -> StepBatch | None:
        """How many steps a model call may take after ``step``: as many as
        the step budget and this run allow (``_budget_end``, ``_should_continue_as_new``),
        within the agent's batch window (None: this step only); the token and cost
        budgets it checks after each step as ``_budget_end`` does. The rest of what this
        loop checks between steps (input, pauses, a redirect, the run's history) changes
        only when the workflow hears of something, which it acts on once the call has
        returned; input it heard of before the call (a step handed back is called again
        before the loop takes input) makes the call take its own step only."""
        if self._runtime is None:  # a session from before agent definitions
            return None
        window = self._runtime.model.batch_ms
        window = c.STEP_BATCH_MS if window is None else window
        b = self._arg.budget
        steps = min(
            c.STEP_BATCH_STEPS,
            b.max_steps - step,
            self._steps_per_run() - (step - self._run_start_step),
        )
        if window <= 0 or steps <= 0:
            return None
        if self._changed_attributes and self._input_waits():
            # Heard of before this call (a step handed back is taken again at once): the
            # call takes its step alone, and the loop takes the input after it.
            return None
        return StepBatch(
            steps=steps,
            window_ms=window,
            tokens_used=self._c.tokens_in + self._c.tokens_out,
            max_tokens=b.max_tokens,
            cost_used=self._c.cost_usd,
            max_cost_usd=b.max_cost_usd,
            deadline=self._c.deadline,
        )

    def _input_waits(self) -> bool:
        """Whether something the loop takes between steps has come: a message or a new
        goal, a pause, a move to another agent version."""
        return bool(self._inbox.items) or self._c.paused or self._c.agent_switch is not None

    async def _resume_step(self, wait: CarriedWait) -> None:
        """Finish the step whose wait the last run handed over (workflows/hand_over.py)."""
        self._resumed_wait = None
        step, call, seq = wait.step, wait.call, wait.seq
        if wait.kind == "approval":
            edited, rejected = await self._approval(step, call, wait.approval)
            approved = self._approved_digest(call, edited, rejected)
            await self._run_tool(step, wait.model_seq, call, seq, edited, rejected, approved)
        elif wait.kind == "sleep" and wait.wake_at is not None:
            self._tool_message(seq, step, call, await self._sleep(wait.wake_at, resumed=True))
        else:
            text = await self._ask_human(wait.question or "", wait.expires_at, wait.queued_before)
            self._tool_message(seq, step, call, text)
        await self._run_calls(step, wait.model_seq, wait.later_calls)

    async def _run_calls(self, step: int, model_seq: int, calls: Sequence[ToolCallRef]) -> None:
        for call in calls:
            await self._tool(step, model_seq, call)
        self._folded.clear()
        if self._c.malformed_streak > self._arg.policy.max_malformed_replies:
            raise SessionEnded(
                SessionStatus.FAILED,
                f"the model sent {self._c.malformed_streak} malformed replies in a row",
            )

    async def _tool(self, step: int, model_seq: int, call: ToolCallRef) -> None:
        seq = self._c.next_seq
        self._c.next_seq += 1
        self._open_calls[call.index] = (call, seq)
        done = self._folded.pop(call.index, None)
        if done is not None and done.seq == seq:
            # call_model ran it (and recorded it at the seq this call would have had), or
            # checked a control tool's arguments: what it asks is done here.
            await self._control(step, call, seq, done)
            return
        edited: dict[str, Any] | None = None
        rejected: str | None = None
        approved: str | None = None
        if not call.valid:
            # The activity must not run it: the call may name a tool this session's policy
            # does not allow (only the workflow knows the policy). The error goes back to
            # the model as the tool's result.
            rejected = call.error or "invalid tool call"
        elif agent_policy.needs_approval(
            self._runtime, self._arg.policy, call, rules_over_never=self._rules_over_never
        ):
            edited, rejected = await self._approval(step, call)
            approved = self._approved_digest(call, edited, rejected)
        await self._run_tool(step, model_seq, call, seq, edited, rejected, approved)

    def _approved_digest(
        self, call: ToolCallRef, edited: dict[str, Any] | None, rejected: str | None
    ) -> str | None:
        """The digest of exactly the call a human approved: run_tool refuses anything else."""
        if not self._bind_calls or rejected is not None:
            return None
        return call_digest(call.name, edited) if edited is not None else call.digest

    async def _run_tool(
        self,
        step: int,
        model_seq: int,
        call: ToolCallRef,
        seq: int,
        edited: dict[str, Any] | None,
        rejected: str | None,
        approved: str | None = None,
    ) -> None:
        editor = self._editors.pop(call.index, None) if edited is not None else None
        route = tool_routing.tool_route(self._runtime if rejected is None else None, call.name)
        if rejected is None and route.task_queue is not None and self._tool_queues is not None:
            rejected = await self._tool_queues.unreachable(call.name, route.task_queue)
            if rejected is not None:
                route, approved = tool_routing.tool_route(None, call.name), None
        arg = RunToolInput(
            session_id=self._sid,
            agent_id=self._arg.agent_id,
            step=step,
            seq=seq,
            model_seq=model_seq,
            call_index=call.index,
            edited_arguments=edited,
            rejected_reason=rejected,
            agent_version=self._runtime.version if self._runtime is not None else None,
            approved_digest=approved,
            edited_by=editor,
        )
        summary = summaries.tool_call(step, call, edited, editor, self._said)
        self._said = None  # said once, on the step's first tool call
        try:
            result = await self._run_tool_activity(route, arg, summary)
        except ActivityError as exc:
            unserved = tool_routing.unserved(exc, call.name, route) if self._tool_queues else None
            if unserved is None:
                unserved = tool_routing.failed_for_good(exc, call.name)
                if unserved is None or not workflow.patched(names.PATCH_TOOL_FAILED_FOR_GOOD):
                    raise
            # Nobody ran the call, or it failed on every attempt: its error is recorded
            # here and goes back to the model.
            refused = arg.model_copy(update={"rejected_reason": unserved, "approved_digest": None})
            result = await self._run_tool_activity(
                tool_routing.tool_route(None, call.name), refused, summary
            )
        await self._control(step, call, seq, result)

    async def _control(self, step: int, call: ToolCallRef, seq: int, result: RunToolOutput) -> None:
        """Close a call that ran, or do what a workflow-handled tool asks."""
        control = result.control
        if control is None:
            self._open_calls.pop(call.index, None)
            return
        if control.kind == "finish":
            if self._message_before_end():
                self._tool_message(seq, step, call, NOT_FINISHED)
                return
            summary = control.summary or self._c.last_message or "finished"
            self._tool_message(seq, step, call, "session finished")
            if not self._fold:
                await self._flush()  # folded steps leave it to the ending's one write
            # The agent's own word that its goal was not reached ends the session failed.
            ended = SessionStatus.FAILED if control.succeeded is False else SessionStatus.COMPLETED
            raise SessionEnded(ended, summary)
        if control.kind == "wait_until":
            now = workflow.now()
            wake_at = control.wake_at or times.later(now, control.seconds or 0)
            text = await self._sleep(wake_at)
            self._tool_message(seq, step, call, text)
        elif control.kind == "ask_human":
            text = await self._ask_human(control.question or "")
            self._tool_message(seq, step, call, text)

    async def _run_tool_activity(
        self, route: tool_routing.ToolRoute, arg: RunToolInput, summary: str
    ) -> RunToolOutput:
        retry, budget = retries.budgeted(
            route.retry, self._arg.policy.tool_max_attempts, implied=self._lean
        )
        # Marked while its activity runs: a cancel that lands meanwhile leaves the mark,
        # and the ending does not say a call it cannot know the fate of did not run.
        self._tool_running = arg.seq
        try:
            out = await self._act(
                names.ACT_RUN_TOOL,
                arg.model_copy(update={"max_failures": budget}),
                RunToolOutput,
                summary=summary,
                limit=route.timeout,
                retry=retry,
                heartbeat=True,
                task_queue=route.task_queue,
                schedule_to_start=route.schedule_to_start,
            )
        except ActivityError as exc:
            if not is_cancelled_exception(exc):
                self._tool_running = None  # it ended, without a result (refused, failed)
            raise
        self._tool_running = None
        return out

    # --- budgets, continue-as-new, ending ------------------------------------------------

    def _budget_end(self) -> tuple[SessionStatus, str] | None:
        """How the session ends before another step, when a budget or its deadline says
        it must (None: another step may run)."""
        b = self._arg.budget
        if self._deadline_passed():
            return SessionStatus.TIMED_OUT, "the session's deadline passed"
        if self._c.step >= b.max_steps:
            return SessionStatus.BUDGET_EXHAUSTED, f"step budget of {b.max_steps} used"
        tokens = self._c.tokens_in + self._c.tokens_out
        if b.max_tokens is not None and tokens >= b.max_tokens:
            return SessionStatus.BUDGET_EXHAUSTED, f"token budget used ({tokens} of {b.max_tokens})"
        if b.max_cost_usd is not None and self._c.cost_usd >= b.max_cost_usd:
            return (
                SessionStatus.BUDGET_EXHAUSTED,
                f"cost budget used (${self._c.cost_usd:.4f} of ${b.max_cost_usd:.4f})",
            )
        return None

    def _steps_per_run(self) -> int:
        """``steps_per_run``, and 1 for a start that gave 0 or less (vigil's faces refuse
        it; a plain Temporal client's start is not checked)."""
        steps = self._arg.steps_per_run
        if steps < 1 and workflow.patched(names.PATCH_RUNS_TAKE_A_STEP):
            return 1
        return steps

    def _should_continue_as_new(self) -> bool:
        if self._c.step - self._run_start_step >= self._steps_per_run():
            return True
        return workflow.info().is_continue_as_new_suggested() or self._history_heavy()

    async def _finish(
        self,
        status: SessionStatus,
        summary: str,
        actor: str | None = None,
        reason: str | None = None,
    ) -> SessionResult:
        self._status = status
        self._approvals.clear()
        self._close_open_step(status)
        if self._inbox.items and workflow.patched(names.PATCH_MESSAGE_BEFORE_END):
            self._drain_inbox()  # acknowledged, so in the transcript, before the end
        text = f"Session ended: {status.value}. {summary}"
        seq = self._c.next_seq
        self._c.next_seq += 1
        self._update(
            status=status,
            step=self._c.step,
            summary=summary,
            finished=True,
            run_count=self._c.run_index,
        )
        self._msgs.append(
            MessageIn(seq=seq, role="system", content=text, step=self._c.step, name="vigil")
        )
        self._event(
            f"session:ended:{status.value}",
            event_kinds.SESSION_ENDED,
            self._c.step,
            actor=actor,
            reason=preview(reason, 2000) if reason else None,
            payload={"status": status.value, "summary": preview(summary, 2000)},
        )
        remember = status != SessionStatus.CANCELLED
        # Lean bookkeeping: the outcome's memory rides with the last records; when that
        # try fails, an activity of its own remembers it once the ending is published.
        riding = self._outcome(status, summary) if remember and self._lean else None
        try:
            written = await self._write_end(riding)
        except ActivityError as exc:
            _refuse_an_earlier_sessions_record(exc)  # its opening rode with the end
            recorded = _recorded_end(exc)
            if recorded is None:
                raise
            return await self._as_recorded(recorded)
        if written is not None and written.last_step is not None:
            # A batch's call recorded steps past the one this run knew of: they count.
            self._c.step = max(self._c.step, written.last_step)
        self._publish()
        await self._notify(
            "session_ended", "ended", status=status.value, summary=preview(summary, 2000)
        )
        if self._lean:
            if riding is not None and (written is None or written.remembered is False):
                await self._remember_outcome(status, summary)
        # Sessions that started before this step existed replay without it (the patch marker
        # is absent from their history), so adding it never breaks a running session.
        elif remember and workflow.patched(names.PATCH_REMEMBER_OUTCOME):
            await self._remember_outcome(status, summary)
        await self._record_input_at_the_end()
        return self._result(status, summary)

    def _result(self, status: SessionStatus, summary: str) -> SessionResult:
        return SessionResult(
            session_id=self._sid,
            status=status,
            steps=self._c.step,
            summary=summary,
            tokens_in=self._c.tokens_in,
            tokens_out=self._c.tokens_out,
            cost_usd=self._c.cost_usd,
            runs=self._c.run_index,
        )

    async def _write_end(self, riding: RememberInput | None) -> RecordOutput | None:
        """The session's last records (and the outcome's memory riding with them). A
        cancel that lands while they are written comes after the session ended: the
        write is made again, and the end stands (sessions from before were cancelled
        with none of it written)."""
        try:
            return await self._flush(riding)
        except (asyncio.CancelledError, ActivityError) as exc:
            if (
                self._status == SessionStatus.CANCELLED
                or not is_cancelled_exception(exc)
                or not workflow.patched(names.PATCH_END_OUTLIVES_CANCEL)
            ):
                raise
            workflow.logger.warning(
                "cancel requested while the session's end was written: the end stands",
                extra={"session_id": self._sid},
            )
            return await self._flush(riding)

    async def _as_recorded(self, ended: RecordedEnd) -> SessionResult:
        """End as the record says the session ended, on a path this run did not take: an
        end written in a workflow task Temporal refused (a signal reached it meanwhile),
        whose retry took that signal first and went on. The record's end stands; what this
        path took since (a message, a pause, ...) is recorded as refused, and the agent's
        webhooks are told of the end (the refused task never told them)."""
        status, summary = ended.status, ended.summary
        self._ended_as_recorded = True
        self._status = status
        if ended.counts is not None and ended.counts[0] > self._c.step:
            # Taken by a call whose result this run never applied (a cancel landed with
            # it): the result and the search attributes count as the record does.
            self._c.step, self._c.tokens_in, self._c.tokens_out, self._c.cost_usd = ended.counts
        self._approvals.clear()
        reason = f"{names.REFUSED_ENDED} ({status.value})"
        taken = [(m.content or "", m.name) for m in self._msgs if m.role == "user"]
        taken += [(text, by) for text, by, _at in self._inbox.items]
        # Refusals stand as they were; human actions (an actor's events but messages,
        # refused above) are refused now; the session's own events of this path are not
        # the record's.
        refusals = [e for e in self._events if e.kind == event_kinds.INPUT_REJECTED]
        actions = [
            e
            for e in self._events
            if e.actor and e.kind not in (event_kinds.HUMAN_MESSAGE, event_kinds.INPUT_REJECTED)
        ]
        self._msgs.clear()
        self._events.clear()
        self._inbox.items.clear()
        self._session_update = None
        self._opening = None
        self._closing_seq = None
        for text, by in taken:
            self._reject_input(names.SIG_MESSAGE, reason, by=by or "unknown", text=text)
        self._events.extend(refusals)
        for event in actions:
            said = event.payload.get("new_goal") or event.payload.get("text")
            self._reject_input(
                event.kind, reason, by=event.actor, text=said if isinstance(said, str) else None
            )
        await self._record_input_at_the_end()
        self._publish()
        await self._notify(
            "session_ended", "ended", status=status.value, summary=preview(summary, 2000)
        )
        return self._result(status, summary)

    async def _record_input_at_the_end(self) -> None:
        """Write the refusals of signals that came while the end was written (or its
        webhooks told, its outcome remembered), each write perhaps seeing more arrive."""
        for _ in range(c.END_FLUSHES):
            if not self._has_unrecorded() or not workflow.patched(names.PATCH_INPUT_AT_THE_END):
                return
            try:
                await self._flush()
            except (asyncio.CancelledError, ActivityError):
                break  # a cancel, or a write given up: the end stands without them
        if self._has_unrecorded():
            workflow.logger.warning(
                "input refused after the session ended was not recorded",
                extra={"session_id": self._sid},
            )

    def _outcome(
        self, status: SessionStatus, summary: str, budget: int | None = None
    ) -> RememberInput:
        return RememberInput(
            session_id=self._sid,
            agent_id=self._arg.agent_id,
            goal=self._c.goal,
            status=status,
            summary=summary,
            steps=self._c.step,
            max_failures=budget or c.TOOL_RETRY.maximum_attempts,
        )

    async def _remember_outcome(self, status: SessionStatus, summary: str) -> None:
        """Turn the outcome into long-term memory (a reflection, or a lesson on failure)."""
        retry, budget = retries.budgeted(c.TOOL_RETRY, None, implied=self._lean)
        try:
            await self._act(
                names.ACT_REMEMBER,
                self._outcome(status, summary, budget),
                RememberOutput,
                summary="remember the outcome",
                limit=c.RECORD_START_TO_CLOSE,
                retry=retry,
                bookkeeping=True,
            )
        except ActivityError as exc:
            # Memory is an aid, never a reason to lose the session's ending.
            workflow.logger.warning("could not remember the outcome: %s", exc.cause)

    def _close_open_step(self, status: SessionStatus) -> None:
        """Answer what the step left open, so the transcript stays whole: every seq filled,
        every tool call with its result. A late activity writing the same seq is harmless
        (the first write wins)."""
        why = f"the session ended ({status.value}) first"
        if self._open_model_seq is not None and self._fold:
            # The model activity may have recorded a reply and run some of its calls.
            self._closing_seq = self._open_model_seq
        if self._open_model_seq is not None:
            self._msgs.append(
                MessageIn(
                    seq=self._open_model_seq,
                    role="assistant",
                    step=self._open_step,
                    content=f"{names.NO_REPLY}{why}]",
                )
            )
            self._open_model_seq = None
        for call, seq in list(self._open_calls.values()):
            if seq is None:
                seq = self._c.next_seq
                self._c.next_seq += 1
            # A call whose activity was running may still finish (its tool_call event,
            # written after, says what it did); one that never began did not run.
            said = (
                f"error: no result: the session ended ({status.value}) before this call "
                "answered; it may still have run (its tool_call event says what it did)"
                if seq == self._tool_running
                else f"error: not run: {why}"
            )
            self._tool_message(seq, self._c.step, call, said)
        self._open_calls.clear()

    # --- the agent definition ---------------------------------------------------------

    async def _resolve_agent(self) -> None:
        """Pin the agent version at the first run (the starter's, or the newest), and
        read the same one again in every later run: a definition changed meanwhile
        never reaches this session (only a redirect to a version moves it)."""
        if self._c.agent_pinned and self._c.agent_version is None:
            self._runtime = AgentRuntime(agent_id=self._arg.agent_id)
            return
        version = self._c.agent_version if self._c.agent_pinned else self._arg.agent_version
        runtime = self._starters_runtime(version)
        if runtime is None:
            runtime = await self._fetch_runtime(version, self._arg.goal)
        self._runtime = runtime
        self._c.agent_version, self._c.agent_pinned = runtime.version, True
        self._arg = agent_policy.effective_input(self._arg, runtime)
        if self._c.goal != self._arg.goal:
            # Redirected in an earlier run, or before this one read its agent (a redirect
            # then found no prompt to fill): the prompt names the goal it has now.
            self._fill_prompt(self._c.goal)

    def _starters_runtime(self, version: int | None) -> AgentRuntime | None:
        """The definition vigil's client resolved when it started the session (at the
        first run only; every later run reads its pinned version again), or None: the
        session reads it itself. The input decides, so a replay takes the same path."""
        given = self._arg.runtime
        if given is None or self._c.agent_pinned:
            return None
        runtime = AgentRuntime.model_validate(given)
        if runtime.agent_id != self._arg.agent_id or (
            version is not None and runtime.version != version
        ):
            return None
        return runtime

    async def _fetch_runtime(self, version: int | None, goal: str) -> AgentRuntime:
        arg = ResolveAgentInput(
            session_id=self._sid, agent_id=self._arg.agent_id, goal=goal, version=version
        )
        summary = f"agent {self._arg.agent_id} v{version}" if version else "agent definition"
        if self._lean:  # a short read: no server round trip for it
            return await folding.run_local(
                names.ACT_RESOLVE_AGENT,
                arg,
                AgentRuntime,
                limit=c.RECORD_START_TO_CLOSE,
                retry=c.RECORD_RETRY,
                summary=summary,
                implied=self._lean,
            )
        return await self._act(
            names.ACT_RESOLVE_AGENT,
            arg,
            AgentRuntime,
            summary=summary,
            limit=c.RECORD_START_TO_CLOSE,
            retry=c.RECORD_RETRY,
        )

    async def _switch_agent(self, version: int, by: str) -> None:
        """A redirect named another version: pin it, or record why not and go on."""
        self._c.agent_switch = None
        old = self._c.agent_version
        if version == old and workflow.patched(names.PATCH_INPUT_BEFORE_RUN):
            return  # named before the run read its version, and the version it read
        self._moving_to = version
        goal = self._c.goal
        try:
            runtime = await self._fetch_runtime(version, goal)
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc)
            self._event(
                f"agent:refused:{workflow.uuid4()}",
                event_kinds.AGENT_VERSION_REFUSED,
                self._c.step,
                actor=by,
                reason=cause,
                payload={"version": version, "kept": old},
            )
            return
        finally:
            self._moving_to = None
        self._runtime = runtime
        self._c.agent_version = runtime.version
        self._arg = agent_policy.effective_input(self._arg, runtime)
        self._event(
            f"agent:version:{workflow.uuid4()}",
            event_kinds.AGENT_VERSION_CHANGED,
            self._c.step,
            actor=by,
            payload={"from": old, "to": runtime.version, "content_hash": runtime.content_hash},
        )
        self._update(agent_version=runtime.version, system_prompt=self._arg.system_prompt)
        if self._c.goal != goal and workflow.patched(names.PATCH_MOVE_TAKES_LATER_GOAL):
            # A redirect of the goal alone came while the version was read.
            self._fill_prompt(self._c.goal)
