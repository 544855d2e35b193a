"""Continue-as-new while a session waits, carrying the wait to the next run.

Temporal writes every signal into history before the workflow sees it, refused or not, so
a session waiting days for a human can be pushed towards the 50 MB history limit without
taking a single step (issue 9: 27 signals of 1.9 MB killed one). While it waits for an
approval, a human reply, a timer or a resume, the session therefore watches its history
(Temporal's suggestion, and its own ``max_history_bytes`` of growth in this run) and, when
it is heavy, records what is pending and continues-as-new. What it was waiting on travels
in ``SessionCarry.waiting``; queued messages in ``SessionCarry.inbox``. The next run
restores both before it handles any signal or update, so the same approval id stays
valid, then waits on and finishes the step.

Deterministic code only: this is part of the workflow (see workflows/session.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from temporalio import workflow

from vigil.schema import names
from vigil.schema.limits import MAX_QUEUED_BYTES, queued_size
from vigil.schema.payloads import (
    Ack,
    CarriedWait,
    PendingApproval,
    QueuedMessage,
    RecordOutput,
    RememberInput,
    SessionCarry,
    SessionStatus,
    StartSessionInput,
    ToolCallRef,
    preview,
)


@dataclass
class Approval:
    pending: PendingApproval
    decision: str | None = None
    """approve | reject"""
    by: str | None = None
    note: str | None = None
    edited: dict[str, Any] | None = None
    decided_at: datetime | None = None


@dataclass
class Inbox:
    items: list[tuple[str, str, datetime]] = field(default_factory=list)
    """(text, by, at) of human messages not yet in the transcript."""


def sleeping_until(wake_at: datetime) -> str:
    return f"timer until {wake_at.isoformat()}"


def asking(question: str) -> str:
    return f"a human reply to: {preview(question, 200)}"


class HandOverWhileWaiting:
    """The part of AgentSession that hands a wait over to the next run."""

    # Provided by AgentSession.
    _arg: StartSessionInput
    _c: SessionCarry
    _status: SessionStatus
    _approvals: dict[str, Approval]
    _inbox: Inbox
    _waiting_for: str | None
    _answer_from: int | None
    _rejected_inputs: int
    _taken_requests: dict[str, Ack]
    _open_step: int
    _open_calls: dict[int, tuple[ToolCallRef, int | None]]
    _model_seq: int
    _protect: bool
    """True once the patch is in: sessions started by older code never hand over here."""
    _settled: bool
    """Whether this run has decided which patches it takes (see AgentSession._settle)."""
    _run_start_size: int

    async def _flush(self, remember: RememberInput | None = None) -> RecordOutput | None:
        raise NotImplementedError

    def _has_unrecorded(self) -> bool:
        raise NotImplementedError

    async def _hand_over(self) -> None:
        raise NotImplementedError

    def _history_heavy(self) -> bool:
        """Time to continue-as-new: Temporal suggests it, or this run's history grew by
        ``max_history_bytes`` (growth, so a run that starts with a big carry never loops)."""
        if not self._protect:
            return False
        info = workflow.info()
        grown = info.get_current_history_size() - self._run_start_size
        return info.is_continue_as_new_suggested() or grown >= self._arg.max_history_bytes

    def _carry_wait(
        self, kind: Literal["approval", "sleep", "ask_human"], **details: Any
    ) -> CarriedWait:
        """The wait in progress, for the next run. The call being handled is the open one
        whose result seq is reserved; the step's later calls follow it."""
        current: tuple[ToolCallRef, int] | None = None
        later: list[ToolCallRef] = []
        for call, seq in self._open_calls.values():
            if current is not None:
                later.append(call)
            elif seq is not None:
                current = (call, seq)
        assert current is not None, "a tool wait without its call"
        step = self._open_step
        if self._c.step != step and workflow.patched(names.PATCH_BATCH_WAIT_STEP):
            # A batch's later step waits (its first step's is the one the call opened).
            step = self._c.step
        return CarriedWait(
            kind=kind,
            step=step,
            model_seq=self._model_seq,
            seq=current[1],
            call=current[0],
            later_calls=later,
            **details,
        )

    async def _hand_over_waiting(
        self, wait: Callable[[], CarriedWait] | None, done: Callable[[], bool]
    ) -> None:
        """Continue-as-new from inside a wait; ``wait`` None means between steps (a pause).
        Returns without handing over when what was awaited arrives meanwhile."""
        if wait is None:
            await self._hand_over()
            return
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            if done():
                return
            if not self._has_unrecorded():
                break
            # Inside a tool exchange: messages stay queued (they join the transcript
            # between steps) and travel in the carry.
            await self._flush()
        self._c.waiting = wait()
        self._c.inbox = [QueuedMessage(text=t, by=b, at=at) for t, b, at in self._inbox.items]
        self._c.rejected_inputs = self._rejected_inputs
        self._carry_requests()
        self._c.run_index += 1
        workflow.logger.info(
            "session handing over to run %s while waiting (%s, history %s bytes)",
            self._c.run_index,
            self._c.waiting.kind,
            workflow.info().get_current_history_size(),
        )
        workflow.continue_as_new(self._next_input())

    def _next_input(self) -> StartSessionInput:
        """The next run's input: this one with the carry. The starter's resolved definition
        served the first run only (every later run reads its pinned version again)."""
        return self._arg.model_copy(update={"carry": self._c, "runtime": None})

    def _carry_requests(self) -> None:
        """The named requests this run and those before took, with their first answers."""
        self._c.taken_requests = list(self._taken_requests)
        self._c.taken_answers = list(self._taken_requests.values())

    def _take_over(self) -> CarriedWait | None:
        """Restore what the last run carried (queued messages, refused-input count, the wait
        in progress). Called from ``__init__``, before this run handles any signal or update."""
        c = self._c
        self._inbox.items = [(m.text, m.by, m.at) for m in c.inbox]
        self._rejected_inputs = c.rejected_inputs
        answers: list[Ack | None] = list(c.taken_answers)
        if len(answers) != len(c.taken_requests):  # carried by a build that kept none
            answers = [None] * len(c.taken_requests)
        for key, answer in zip(c.taken_requests, answers, strict=True):
            self._taken_requests[key] = answer or Ack(
                accepted=True, status=self._status, message="taken in an earlier run"
            )
        wait, c.waiting, c.inbox = c.waiting, None, []
        c.taken_requests, c.taken_answers = [], []
        if wait is None:
            return None
        self._open_step, self._model_seq = wait.step, wait.model_seq
        self._open_calls = {wait.call.index: (wait.call, wait.seq)}
        self._open_calls.update({call.index: (call, None) for call in wait.later_calls})
        if wait.kind == "approval" and wait.approval is not None:
            self._approvals[wait.approval.approval_id] = Approval(wait.approval)
            self._status = SessionStatus.WAITING_APPROVAL
        elif wait.kind == "sleep" and wait.wake_at is not None:
            self._status = SessionStatus.SLEEPING
            self._waiting_for = sleeping_until(wait.wake_at)
        elif wait.kind == "ask_human":
            self._status = SessionStatus.WAITING_HUMAN
            self._waiting_for = asking(wait.question or "")
            self._answer_from = wait.queued_before
        return wait

    def _answers_question(self) -> bool:
        """Whether a message that comes now is the answer to an ask_human question that
        waits (the first after those queued before it was asked)."""
        return self._answer_from is not None and len(self._inbox.items) == self._answer_from

    def _taken(self, patch_taken: bool, validating: bool) -> bool:
        """Whether this run takes a patch's path (``patch_taken``, as settled). A validator
        never runs on replay: before the run has settled, the run it checks for is one
        that takes every patch."""
        return patch_taken or (validating and not self._settled)

    def _queue_error(self, text: str, validating: bool = False) -> str | None:
        """Refuse a message when too much text already waits for the next step: the queue
        is carried across continue-as-new and must stay small."""
        if not self._taken(self._protect, validating):
            return None
        if self._answers_question():
            return None  # the answer to a question that waits: taken at once
        queued = sum(queued_size(t) for t, _by, _at in self._inbox.items)
        if queued + queued_size(text) > MAX_QUEUED_BYTES:
            return (
                f"{queued} bytes of messages already wait for the next step "
                f"(limit {MAX_QUEUED_BYTES}); send it after that step"
            )
        return None
