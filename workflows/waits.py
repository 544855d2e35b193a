"""A session's waits for people and time (deterministic).

The part of AgentSession that waits: for an approval of a tool call, for a paused
session's resume, for a sleep's timer or a wake, for a human's reply. Every wait is
bounded by its own expiry and the session's deadline, records human actions as they come
(a session may wait for days), and hands over to a new run (continue-as-new) when its
history grows heavy meanwhile (workflows/hand_over.py).

Deterministic code only: this is part of the workflow (see workflows/session.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

from vigil.schema import event_kinds, names
from vigil.schema.hooks import WebhookEvent
from vigil.schema.payloads import CarriedWait, PendingApproval, SessionStatus, ToolCallRef, preview
from vigil.workflows import summaries, times, webhooks
from vigil.workflows.hand_over import Approval, asking, sleeping_until
from vigil.workflows.human_control import HumanControl


class SessionEnded(Exception):
    """The session ends here, with this status and summary (raised from wherever it is
    decided; the loop writes the end)."""

    def __init__(self, status: SessionStatus, summary: str) -> None:
        super().__init__(summary)
        self.status = status
        self.summary = summary


class Waits(HumanControl):
    """The part of AgentSession that waits for people and time."""

    # Provided by AgentSession.
    _editors: dict[int, str | None]

    async def _approval(
        self, step: int, call: ToolCallRef, resumed: PendingApproval | None = None
    ) -> tuple[dict[str, Any] | None, str | None]:
        policy = self._arg.policy
        if resumed is not None:  # requested by an earlier run, restored by _take_over
            approval_id, expires = resumed.approval_id, resumed.expires_at
            approval = self._approvals[approval_id]
        else:
            approval_id = f"a{step}-{call.index}"
            now = workflow.now()
            expires = times.later(now, policy.approval_timeout_seconds)
            approval = Approval(
                PendingApproval(
                    approval_id=approval_id,
                    tool=call.name,
                    arguments_preview=call.arguments_preview,
                    step=step,
                    requested_at=now,
                    expires_at=expires,
                    digest=call.digest if self._bind_calls else None,
                )
            )
            self._approvals[approval_id] = approval
            self._event(
                f"approval:{approval_id}:requested",
                event_kinds.APPROVAL_REQUESTED,
                step,
                payload={
                    "approval_id": approval_id,
                    "tool": call.name,
                    "arguments": call.arguments_preview,
                    **({"digest": call.digest} if self._bind_calls else {}),
                },
            )
            self._set_status(SessionStatus.WAITING_APPROVAL)
            await self._flush()
            await self._notify(
                "approval_requested",
                f"approval-{approval_id}",
                approval_id=approval_id,
                tool=call.name,
                arguments=call.arguments_preview,
                expires_at=expires.isoformat(),
            )
        decided = await self._wait(
            lambda: approval.decision is not None,
            until=expires,
            hand_over=lambda: self._carry_wait("approval", approval=approval.pending),
            summary=summaries.approval_timer(approval.pending),
        )
        if not decided:
            # Nobody decided in time: the policy does, and its decision is recorded like a
            # human's. When it is the session's deadline that passed, the call is not run.
            approval.by, approval.decided_at = "policy", workflow.now()
            if self._deadline_passed():
                approval.decision, approval.note = "reject", "the session's deadline passed"
            else:
                approval.decision = {"approve": "approve", "fail": "fail"}.get(
                    policy.on_approval_timeout, "reject"
                )
                approval.note = "approval timed out"
            self._record_decision(approval)  # a human's was queued when it was taken
        del self._approvals[approval_id]
        if approval.decision == "fail":
            raise SessionEnded(SessionStatus.FAILED, f"approval {approval_id} timed out")
        self._set_status(SessionStatus.RUNNING)
        if workflow.patched(names.PATCH_DECISION_FIRST):
            # The decision in the record before the call it decided runs: the record's own
            # order (ids, the API's stream) is the order things happened. Sessions from
            # before wrote it with the next record, after the tool's result.
            await self._flush()
        if self._deadline_passed():
            self._check_budgets()
        if approval.decision == "approve":
            if approval.edited is not None:
                self._editors[call.index] = approval.by
            return approval.edited, None
        return None, f"rejected by {approval.by}: {approval.note or 'no reason given'}"

    async def _hold_while_paused(self) -> None:
        self._set_status(SessionStatus.PAUSED)
        await self._flush()
        await self._wait(
            lambda: not self._c.paused, summary=summaries.paused_timer(self._c.paused_by)
        )
        self._set_status(SessionStatus.RUNNING)

    async def _sleep(self, wake_at: datetime, resumed: bool = False) -> str:
        # A wake of an earlier sleep does not end this one; a wake taken in this run's first
        # task, before run() started, is for the sleep the run took over.
        if not (
            resumed and self._wake_by is not None and workflow.patched(names.PATCH_INPUT_BEFORE_RUN)
        ):
            self._wake_by = None
        self._set_status(SessionStatus.SLEEPING)
        self._waiting_for = sleeping_until(wake_at)
        await self._flush()
        await self._wait(
            lambda: self._wake_by is not None,
            until=wake_at,
            hand_over=lambda: self._carry_wait("sleep", wake_at=wake_at),
            summary=summaries.sleep_timer(wake_at),
        )
        self._waiting_for = None
        self._set_status(SessionStatus.RUNNING)
        now = workflow.now().isoformat()
        if self._wake_by is not None:
            return f"woken early by {self._wake_by} at {now}"
        if workflow.now() < wake_at and self._deadline_passed():
            return f"woke at {now} before {wake_at.isoformat()}: the session's deadline passed"
        return f"woke at {now} as planned"

    async def _ask_human(
        self, question: str, expires: datetime | None = None, earlier: int = 0
    ) -> str:
        """Wait for a human's reply to ``question``: the first message that comes after the
        ``earlier`` ones queued before it was asked (those wait for the next step, as their
        senders were told). ``expires`` and ``earlier``: a question handed over."""
        self._set_status(SessionStatus.WAITING_HUMAN)
        self._waiting_for = asking(question)
        if expires is None:  # a new question (a handed-over one was told already)
            # Messages sent before the question (while the model call that asks it ran)
            # answered it, unseen by anyone: asked only when some wait. Counted as the
            # question is asked, before anything awaits: a message from then on is told it
            # is the answer (``message_update``), and is.
            earlier = len(self._inbox.items)
            if earlier and not workflow.patched(names.PATCH_ASK_AFTER_QUEUED):
                earlier = 0
        self._answer_from = earlier
        await self._flush()
        if expires is None:
            await self._notify(
                "human_asked", f"ask-{self._c.next_seq}", question=preview(question, 2000)
            )
            expires = times.later(workflow.now(), self._arg.policy.ask_human_timeout_seconds)
        got = await self._wait(
            lambda: len(self._inbox.items) > earlier,
            until=expires,
            hand_over=lambda: self._carry_wait(
                "ask_human", question=question, expires_at=expires, queued_before=earlier
            ),
            summary=summaries.ask_timer(question, expires),
        )
        self._waiting_for = None
        self._answer_from = None
        self._set_status(SessionStatus.RUNNING)
        if not got:
            return "no human replied in time"
        text, by, _at = self._inbox.items.pop(earlier)
        self._event(
            f"human:{workflow.uuid4()}",
            event_kinds.HUMAN_REPLY,
            self._c.step,
            actor=by,
            payload={"text": preview(text, 2000)},
        )
        return f"{by} replied: {text}"

    async def _wait(
        self,
        done: Callable[[], bool],
        until: datetime | None = None,
        hand_over: Callable[[], CarriedWait] | None = None,
        summary: str | None = None,
    ) -> bool:
        """wait_condition bounded by ``until`` and the session deadline; False on timeout.

        Human actions that arrive meanwhile (pause, redirect, refused input...) are recorded
        as they come, not when the wait ends: a session may wait for days. When its history
        grows heavy meanwhile, the session continues-as-new and the next run waits on:
        ``hand_over`` says what it waits for (None: between steps, nothing to carry).
        """
        limits = [t for t in (until, self._c.deadline) if t is not None]
        while True:
            timeout: timedelta | None = None
            if limits:
                remaining = (min(limits) - workflow.now()).total_seconds()
                if remaining <= 0:
                    return bool(done())
                timeout = timedelta(seconds=remaining)
            try:
                await workflow.wait_condition(
                    lambda: done() or self._has_unrecorded() or self._history_heavy(),
                    timeout=timeout,
                    timeout_summary=summaries.bounded_by(summary, until, self._c.deadline),
                )
            except TimeoutError:
                return bool(done())
            if done():
                return True
            await self._flush()
            if self._history_heavy():
                await self._hand_over_waiting(hand_over, done)

    def _deadline_passed(self) -> bool:
        return self._c.deadline is not None and workflow.now() >= self._c.deadline

    def _check_budgets(self) -> None:
        ended = self._budget_end()
        if ended is not None:
            raise SessionEnded(*ended)

    async def _notify(self, event: WebhookEvent, key: str, **data: Any) -> None:
        """Tell the agent's webhooks (a child workflow delivers; never awaited further)."""
        await webhooks.notify(
            self._runtime,
            self._sid,
            event,
            key,
            {"step": self._c.step, **data},
            implied=self._lean,
        )
