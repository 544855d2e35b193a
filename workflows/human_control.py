"""Human control of a session: signals, updates and the state query (deterministic).

Every control arrives two ways, as a signal (fire and forget) and as an update (validated
and acknowledged), and both decode the raw payload themselves, so no input (a wrong type,
a missing or extra argument, an unknown name, a payload this worker cannot decrypt) can
fail a workflow task: a signal that cannot be taken is counted and recorded as an
``input_rejected`` event, an update is refused by its validator with the reason. The
effects (a decision, a pause, a message queued for the next step, a new goal, a wake)
are shared by both.

Deterministic code only: this is part of the workflow (see workflows/session.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from vigil.schema import event_kinds, jsonlimits, names
from vigil.schema.agents import agent_version_error
from vigil.schema.limits import input_error, line_text_error
from vigil.schema.payloads import (
    FINAL_STATUSES,
    Ack,
    ApproveInput,
    MessageInput,
    PauseInput,
    RedirectInput,
    RejectInput,
    ResumeInput,
    SessionState,
    SessionStatus,
    WakeInput,
    preview,
)
from vigil.workflows import agents as agent_policy
from vigil.workflows import summaries
from vigil.workflows.bookkeeping import Bookkeeping
from vigil.workflows.hand_over import Approval

M = TypeVar("M", bound=BaseModel)

# The control signals and the payload each one carries (the contract in DESIGN.md).
SIGNAL_INPUTS: dict[str, type[BaseModel]] = {
    names.SIG_APPROVE: ApproveInput,
    names.SIG_REJECT: RejectInput,
    names.SIG_PAUSE: PauseInput,
    names.SIG_RESUME: ResumeInput,
    names.SIG_MESSAGE: MessageInput,
    names.SIG_REDIRECT: RedirectInput,
    names.SIG_WAKE: WakeInput,
}


def _said(value: BaseModel | None) -> tuple[str | None, str | None]:
    """Who an input says sent it, and the text it carries (a message's, a redirect's goal)."""
    by = getattr(value, "by", None)
    text = getattr(value, "text", None) or getattr(value, "goal", None)
    return (by if isinstance(by, str) else None), (text if isinstance(text, str) else None)


def _request_key(value: BaseModel) -> str | None:
    """What a named request is remembered by: its kind and its id (a resume that reuses a
    pause's id is another request)."""
    request = getattr(value, "request_id", None)
    return f"{type(value).__name__}:{request}" if request else None


MAX_TAKEN_REQUESTS = 256
"""How many answers to named requests a run keeps (a request is sent again within a minute
of its first sending)."""

NO_ARGUMENT = RawValue(Payload())
"""What an update handler or validator gets when the update came with no argument (its
own ``TypeError`` otherwise): refused as a payload of the wrong count is."""


class HumanControl(Bookkeeping):
    """The part of AgentSession that takes human control."""

    # Provided by AgentSession.
    _signals: int
    _taken_requests: dict[str, Ack]
    _bind_calls: bool
    _moving_to: int | None
    _wake_by: str | None

    def _input_before_run(self) -> None:
        raise NotImplementedError

    # --- human control: decoding input ----------------------------------------------------

    @staticmethod
    def _parse(args: Sequence[RawValue], model: type[M]) -> tuple[M | None, str | None]:
        """Decode one control payload: (value, None) or (None, why it is refused). Pure."""
        if len(args) != 1:
            return None, f"expected one JSON object argument, got {len(args)}"
        try:
            value = workflow.payload_converter().from_payload(args[0].payload, model)
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            # ValidationError (wrong types, missing fields, not an object, not JSON) is a
            # ValueError; an unknown payload encoding a KeyError or RuntimeError.
            return None, f"malformed {model.__name__}: {preview(str(exc), 300)}"
        if not isinstance(value, model):
            return None, f"malformed {model.__name__}: not a JSON object"
        # The same limits as the client and the CLI check before sending (schema/limits.py).
        return value, input_error(value)

    def _reject_input(
        self, signal: str, reason: str, *, by: str | None = None, text: str | None = None
    ) -> None:
        """Count and record a refused signal (or action); who it says sent it and the text
        it carried (a message's, a redirect's goal), when known."""
        self._rejected_inputs += 1
        workflow.logger.warning("rejected %s signal: %s", signal, reason)
        payload: dict[str, Any] = {"signal": signal, "at": workflow.now().isoformat()}
        if by is not None:
            payload["by"] = by  # not the event's actor: nobody acted, vigil refused
        if text is not None:
            payload["text"] = preview(text, 2000)
        self._event(
            f"rejected:{workflow.uuid4()}",
            event_kinds.INPUT_REJECTED,
            self._c.step,
            reason=reason,
            payload=payload,
        )

    # --- human control: signals (fire and forget) -----------------------------------------

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Every control signal: one handler that receives raw payloads, so no input (a
        wrong type, a missing or extra argument, an unknown name) can fail a workflow
        task. What it refuses is counted in ``state.rejected_inputs`` and recorded as a
        ``input_rejected`` event."""
        self._input_before_run()
        self._signals += 1
        undecryptable = self._undecryptable(args)
        if undecryptable is not None:
            self._reject_input(name, undecryptable)
            return
        model = SIGNAL_INPUTS.get(name)
        if model is None:
            self._reject_input(
                name, f"unknown signal {preview(name, 100)!r}; known: {', '.join(SIGNAL_INPUTS)}"
            )
            return
        value, error = self._parse(args, model)
        if value is not None and error is None and self._taken_before(value) is not None:
            # Sent again as a signal after its update went unanswered, and the update was
            # taken meanwhile (or the other way round): taken once.
            return
        if value is not None and error is None:
            ended = self._ended_error()
            if ended is not None and workflow.patched(names.PATCH_INPUT_AT_THE_END):
                error = ended
            else:
                error = self._state_error(value)
        if value is not None and error is None:
            # Asked only for input the checks before it took.
            nul = line_text_error(value)
            if nul is not None and workflow.patched(names.PATCH_LINE_TEXT_NUL):
                error = nul
        if error is not None or value is None:
            by, text = _said(value)
            self._reject_input(name, error or "malformed payload", by=by, text=text)
            return
        self._apply(value)
        self._kept(value, self._ack(name, f"taken as the {name} signal"))

    def _undecryptable(self, args: Sequence[RawValue]) -> str | None:
        """Why this signal is refused for a payload the codec could not decrypt (None: it
        is not), the same on every replay of the history.

        Whether a payload decrypts depends on the worker's keys, not only on the history:
        a signal sealed with a key this worker lacks is refused (a session stalled on it
        would be lost to anyone else's typo), and the refusal leaves a marker. A replay
        refuses again exactly the signals that left one, even on a worker that was given
        the key since; a signal that was taken but no longer decrypts here (a key this
        worker lacks) fails the workflow task until a worker with the key replays it,
        as it would have before."""
        reasons = [
            a.payload.metadata.get(names.UNDECRYPTABLE_REASON, b"").decode(errors="replace")
            for a in args
            if a.payload.metadata.get("encoding") == names.UNDECRYPTABLE_ENCODING
        ]
        marker = f"{names.PATCH_UNDECRYPTABLE_SIGNAL}-{self._signals}"
        if not workflow.unsafe.is_replaying_history_events():
            if not reasons:
                return None
            workflow.patched(marker)  # not self._patched: lean sessions take every patch
            return f"payload could not be decrypted: {preview(reasons[0], 300)}"
        if workflow.patched(marker):  # refused when first handled
            why = preview(reasons[0], 300) if reasons else "not by the worker that took it"
            return f"payload could not be decrypted: {why}"
        if reasons:
            raise RuntimeError(
                f"signal {self._signals} of this run was taken when first handled but its "
                f"payload cannot be decrypted here: {reasons[0]}"
            )
        return None

    def _state_error(self, value: BaseModel) -> str | None:
        """Why the session cannot take this (well-formed) input now; None when it can."""
        if isinstance(value, ApproveInput):
            return self._approve_input_error(value)
        if isinstance(value, RejectInput):
            return self._approve_error(value.approval_id)
        if isinstance(value, RedirectInput):
            full = self._queue_error(value.goal)
            if full is not None and workflow.patched(names.PATCH_REDIRECT_QUEUE_LIMIT):
                return full
            return self._redirect_error(value)
        if isinstance(value, WakeInput) and self._status != SessionStatus.SLEEPING:
            return "the session is not sleeping"
        if isinstance(value, (PauseInput, ResumeInput)):
            refused = self._pause_state_error(isinstance(value, PauseInput))
            if refused is not None and workflow.patched(names.PATCH_PAUSE_STATE_SIGNALS):
                return refused
        if isinstance(value, MessageInput):
            return self._queue_error(value.text)
        return None

    def _apply(self, value: BaseModel) -> None:
        if isinstance(value, ApproveInput):
            self._decide(value.approval_id, "approve", value.by, value.note, value.edited_arguments)
        elif isinstance(value, RejectInput):
            self._decide(value.approval_id, "reject", value.by, value.reason, None)
        elif isinstance(value, PauseInput):
            self._pause(value)
        elif isinstance(value, ResumeInput):
            self._resume(value)
        elif isinstance(value, MessageInput):
            self._message(value)
        elif isinstance(value, RedirectInput):
            self._redirect(value)
        elif isinstance(value, WakeInput):
            self._wake(value)

    # --- human control: updates (validated, acknowledged) ---------------------------------
    # Updates take the raw payload too, so a malformed one gets the validator's clear
    # refusal instead of a generic decoding failure.

    def _valid(self, raw: RawValue, model: type[M], *, validating: bool = False) -> M:
        """Decode in a validator (refusing what is malformed, and one-line text holding
        NUL: a validator leaves no history, so that refusal needs no patch) or in the
        handler."""
        value, error = self._parse([] if raw is NO_ARGUMENT else [raw], model)
        self._refuse(error)
        assert value is not None
        if validating:
            self._refuse(line_text_error(value))
        return value

    @workflow.update(name=names.UPD_APPROVE)
    def approve_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, ApproveInput)
        return self._once(
            arg,
            lambda: self._decide(
                arg.approval_id, "approve", arg.by, arg.note, arg.edited_arguments
            ),
            "approve",
            f"approved {arg.approval_id}",
        )

    @approve_update.validator
    def _validate_approve(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, ApproveInput, validating=True)
        if self._taken_before(value) is None:
            self._refuse(self._ended_error() or self._approve_input_error(value, validating=True))

    @workflow.update(name=names.UPD_REJECT)
    def reject_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, RejectInput)
        return self._once(
            arg,
            lambda: self._decide(arg.approval_id, "reject", arg.by, arg.reason, None),
            "reject",
            f"rejected {arg.approval_id}",
        )

    @reject_update.validator
    def _validate_reject(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, RejectInput, validating=True)
        if self._taken_before(value) is None:
            self._refuse(
                self._ended_error() or self._approve_error(value.approval_id, validating=True)
            )

    @workflow.update(name=names.UPD_PAUSE)
    def pause_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, PauseInput)
        return self._once(arg, lambda: self._pause(arg), "pause", "paused")

    @pause_update.validator
    def _validate_pause(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, PauseInput, validating=True)
        if self._taken_before(value) is None:
            self._refuse(self._ended_error() or self._pause_state_error(pausing=True))

    @workflow.update(name=names.UPD_RESUME)
    def resume_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, ResumeInput)
        return self._once(arg, lambda: self._resume(arg), "resume", "resumed")

    @resume_update.validator
    def _validate_resume(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, ResumeInput)
        if self._taken_before(value) is None:
            self._refuse(self._ended_error() or self._pause_state_error(pausing=False))

    def _pause_state_error(self, pausing: bool) -> str | None:
        """Why a pause (``pausing``) or a resume cannot be taken now: the session already
        is where it would put it (None: it can)."""
        if pausing:
            return "already paused" if self._c.paused else None
        return None if self._c.paused else "the session is not paused"

    @workflow.update(name=names.UPD_MESSAGE)
    def message_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, MessageInput)
        # The first message to come while the agent waits on ask_human is its answer
        # (those queued before the question wait for the next step).
        said = (
            "message taken as the answer to the agent's question"
            if self._answers_question()
            else "message queued for the next step"
        )
        return self._once(arg, lambda: self._message(arg), "message", said)

    @message_update.validator
    def _validate_message(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, MessageInput)
        if self._taken_before(value) is None:
            self._refuse(self._ended_error() or self._queue_error(value.text, validating=True))

    @workflow.update(name=names.UPD_REDIRECT)
    def redirect_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, RedirectInput)
        return self._once(arg, lambda: self._redirect(arg), "redirect", "goal changed")

    @redirect_update.validator
    def _validate_redirect(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, RedirectInput, validating=True)
        if self._taken_before(value) is None:
            self._refuse(
                self._ended_error()
                or self._queue_error(value.goal, validating=True)
                or self._redirect_error(value, validating=True)
            )

    @workflow.update(name=names.UPD_WAKE)
    def wake_update(self, raw: RawValue = NO_ARGUMENT) -> Ack:
        arg = self._valid(raw, WakeInput)
        return self._once(arg, lambda: self._wake(arg), "wake", "woken")

    @wake_update.validator
    def _validate_wake(self, raw: RawValue = NO_ARGUMENT) -> None:
        value = self._valid(raw, WakeInput, validating=True)
        asleep = self._status == SessionStatus.SLEEPING
        if self._taken_before(value) is None:
            self._refuse(self._ended_error() or (None if asleep else "the session is not sleeping"))

    @workflow.query(name=names.QUERY_STATE)
    def state(self) -> SessionState:
        return SessionState(
            session_id=self._sid,
            agent_id=self._arg.agent_id,
            goal=self._c.goal,
            status=self._status,
            step=self._c.step,
            paused=self._c.paused,
            pending_approvals=[a.pending for a in self._approvals.values() if a.decision is None],
            tokens_in=self._c.tokens_in,
            tokens_out=self._c.tokens_out,
            cost_usd=self._c.cost_usd,
            budget=self._arg.budget,
            last_message=self._c.last_message,
            run_index=self._c.run_index,
            rejected_inputs=self._rejected_inputs,
            waiting_for=self._waiting_for,
            agent_version=self._c.agent_version,
        )

    # --- the effects shared by signals and updates -----------------------------------------

    @staticmethod
    def _refuse(error: str | None) -> None:
        if error:
            raise ApplicationError(error, type=names.ERR_INVALID_INPUT, non_retryable=True)

    def _taken_before(self, value: BaseModel) -> Ack | None:
        """The answer this run gave the request ``value`` names, if it took it already: the
        same request sent again as a signal after its update went unanswered (the
        client's way to keep it through a restart of Temporal, which keeps an update
        only in memory until a worker takes it), or that update arriving after all."""
        key = _request_key(value)
        return self._taken_requests.get(key) if key else None

    def _once(self, arg: BaseModel, take: Callable[[], None], action: str, message: str) -> Ack:
        """An update's effect (``take``) and its answer, unless it names a request taken
        already: then that request's answer, and no effect."""
        if (before := self._taken_before(arg)) is not None:
            return before
        take()
        return self._kept(arg, self._ack(action, message))

    def _kept(self, value: BaseModel, ack: Ack) -> Ack:
        """Remember the answer to a request that names its id (the newest
        ``MAX_TAKEN_REQUESTS``); ``ack`` as it is."""
        key = _request_key(value)
        if key:
            self._taken_requests[key] = ack
            while len(self._taken_requests) > MAX_TAKEN_REQUESTS:
                del self._taken_requests[next(iter(self._taken_requests))]
        return ack

    def _ack(self, action: str, message: str) -> Ack:
        """The status after the action (the loop applies it right after this handler)."""
        after = summaries.status_after(action, self._status)
        return Ack(accepted=True, status=after, message=message, paused=self._c.paused)

    def _ended_error(self) -> str | None:
        if self._status in FINAL_STATUSES:
            return f"{names.REFUSED_ENDED} ({self._status.value})"
        return None

    def _approve_error(self, approval_id: str, validating: bool = False) -> str | None:
        approval = self._approvals.get(approval_id)
        if approval is None:
            pending = ", ".join(self._approvals) or "none"
            return f"unknown approval id {approval_id!r} (pending: {pending})"
        if approval.decision is not None:
            return f"approval {approval_id!r} was already decided ({approval.decision})"
        expires = approval.pending.expires_at
        if workflow.now() >= expires and (
            validating or workflow.patched(names.PATCH_NO_DECISION_PAST_EXPIRY)
        ):
            # Taken after its expiry (no worker ran the session when it came, or when the
            # wait's timer fired, whose task takes signals first): the policy's timeout
            # decides it, as when no one answered. An approval was taken then, and the
            # call it approved ran after its window.
            return (
                f"approval {approval_id!r} expired at {expires.isoformat()}: the session's "
                "approval timeout decides it"
            )
        return None

    def _approve_input_error(self, value: ApproveInput, validating: bool = False) -> str | None:
        """An approval holds only for the pending call: the digest, when given, must be
        that call's, and edited arguments must fit the tool's schema."""
        error = self._approve_error(value.approval_id, validating)
        if error is not None or not self._taken(self._bind_calls, validating):
            return error
        pending = self._approvals[value.approval_id].pending
        if value.digest is not None and value.digest != pending.digest:
            return (
                f"approval {value.approval_id!r} is for the call with digest {pending.digest}, "
                f"not {value.digest}"
            )
        if value.edited_arguments is not None:
            if self._runtime is None and (
                validating or workflow.patched(names.PATCH_INPUT_BEFORE_RUN)
            ):
                # The run has not read its pinned definition yet (its first task, or while
                # that read is retried). A signal's check: histories from before checked
                # the built-in tools' schemas.
                return (
                    "edited_arguments cannot be checked yet: the session's run has not read "
                    "its agent definition; send the approval again in a moment"
                )
            args = value.edited_arguments
            constant = jsonlimits.non_finite(args)
            if constant is not None and (validating or workflow.patched(names.PATCH_FINITE_EDITS)):
                # Taken, the call's digest held NaN where its input (JSON) holds null: the
                # tool refused to run it as not the call approved, and the session failed.
                return f"edited_arguments hold {constant}, which is not a JSON number"
            # A validator never asks a patch (nor matches with Python's re); elsewhere the
            # histories from before replay as they were checked then.
            linear = validating or workflow.patched(names.PATCH_LINEAR_PATTERNS)
            error = agent_policy.edited_arguments_error(
                self._runtime, pending.tool, args, linear=linear
            )
            if error is None or validating:
                return error
            # A signal refused only by the stricter integers: asked only then.
            loose = agent_policy.edited_arguments_error(
                self._runtime, pending.tool, args, strict=False, linear=linear
            )
            if loose is None and not workflow.patched(names.PATCH_WHOLE_NUMBERS):
                return None
            return error
        return None

    def _redirect_error(self, value: RedirectInput, validating: bool = False) -> str | None:
        if value.agent_version is None:
            return None
        if not self._taken(self._bind_calls, validating):
            return "this session predates agent definitions: it cannot change version"
        if value.agent_version < 1:
            return "agent_version must be 1 or more"
        if validating:
            # An update's refusal leaves no history. A signal's is not refused here (its
            # histories replay as taken): the session finds no such version when it reads
            # it, records agent_version_refused and goes on.
            return agent_version_error(value.agent_version)
        return None

    def _decide(
        self,
        approval_id: str,
        decision: str,
        by: str,
        note: str | None,
        edited: dict[str, Any] | None,
    ) -> None:
        approval = self._approvals[approval_id]
        approval.decision, approval.by, approval.note = decision, by, note
        approval.edited = edited
        approval.decided_at = workflow.now()
        # Recorded where it is taken: an input refused in the same task for coming after
        # it (already decided) is recorded after it, as it happened.
        self._record_decision(approval)

    def _record_decision(self, approval: Approval) -> None:
        """Queue the ``approval_decided`` event of a decided approval (once: a human's when
        it is taken, the policy's when the wait timed out without one)."""
        pending = approval.pending
        self._event(
            f"approval:{pending.approval_id}:decided",
            event_kinds.APPROVAL_DECIDED,
            pending.step,
            actor=approval.by,
            reason=approval.note,
            payload={
                "approval_id": pending.approval_id,
                "decision": approval.decision,
                "tool": pending.tool,
                "edited_arguments": approval.edited,
                "at": (approval.decided_at or workflow.now()).isoformat(),
            },
        )

    def _pause(self, arg: PauseInput) -> None:
        if self._c.paused:
            return
        self._c.paused = True
        self._c.paused_by = arg.by
        self._event(
            f"human:{workflow.uuid4()}",
            event_kinds.SESSION_PAUSED,
            self._c.step,
            actor=arg.by,
            reason=arg.reason,
            payload={"at": workflow.now().isoformat()},
        )

    def _resume(self, arg: ResumeInput) -> None:
        if not self._c.paused:
            return
        self._c.paused = False
        self._event(
            f"human:{workflow.uuid4()}",
            event_kinds.SESSION_RESUMED,
            self._c.step,
            actor=arg.by,
            payload={"at": workflow.now().isoformat()},
        )

    def _message(self, arg: MessageInput) -> None:
        self._inbox.items.append((arg.text, arg.by, workflow.now()))

    def _redirect(self, arg: RedirectInput) -> None:
        old = self._c.goal
        self._c.goal = arg.goal
        self._inbox.items.append((f"New goal from {arg.by}: {arg.goal}", arg.by, workflow.now()))
        self._event(
            f"human:{workflow.uuid4()}",
            event_kinds.SESSION_REDIRECTED,
            self._c.step,
            actor=arg.by,
            payload={
                "old_goal": preview(old, 2000),
                "new_goal": preview(arg.goal, 2000),
                "at": workflow.now().isoformat(),
            },
        )
        self._update(goal=arg.goal)
        self._fill_prompt(arg.goal)
        self._publish()
        if arg.agent_version is not None and arg.agent_version != self._c.agent_version:
            self._c.agent_switch = (arg.agent_version, arg.by)
        elif (
            arg.agent_version is not None
            and self._moving_to not in (None, arg.agent_version)
            and workflow.patched(names.PATCH_REDIRECT_BACK_DURING_MOVE)
        ):
            # Back to the version it runs while an earlier redirect's move is read: moved
            # back once that move is made, whatever was asked in between (the record says
            # both moves).
            self._c.agent_switch = (arg.agent_version, arg.by)
        elif (
            arg.agent_version is not None
            and self._c.agent_switch is not None
            and workflow.patched(names.PATCH_LAST_REDIRECT_WINS)
        ):
            # Back to the version it runs before an earlier redirect's move was made: the
            # last redirect is the one that holds.
            self._c.agent_switch = None

    def _fill_prompt(self, goal: str) -> None:
        """The agent's system prompt for ``goal``, here and in the record, when its template
        holds the goal and the start did not give a prompt of its own."""
        runtime = self._runtime
        if runtime is None or runtime.prompt_around_goal is None:
            return
        if "system_prompt" in (self._arg.overrides or []):
            return
        if not workflow.patched(names.PATCH_PROMPT_FOLLOWS_GOAL):
            return
        prompt = goal.join(runtime.prompt_around_goal)
        self._arg.system_prompt = prompt
        # Written with the version it runs, as a move's prompt is (the system's write).
        self._update(agent_version=self._c.agent_version, system_prompt=prompt)

    def _wake(self, arg: WakeInput) -> None:
        self._wake_by = arg.by
        self._event(
            f"human:{workflow.uuid4()}",
            event_kinds.SESSION_WOKEN,
            self._c.step,
            actor=arg.by,
            reason=arg.reason,
            payload={"at": workflow.now().isoformat()},
        )
