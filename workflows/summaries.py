"""What Temporal UI shows of a session, so its history reads like a transcript.

Activity and timer summaries, the workflow's current details (the pending approval and
how to decide it), who sent each human action, and the status an acknowledgement reports
(the one after the action). Summaries and details are metadata: they add no command to
history, so changing them never breaks the replay of a running session.

Deterministic code only: this is part of the workflow (see workflows/session.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vigil.schema import names
from vigil.schema.payloads import (
    EventIn,
    MessageIn,
    PendingApproval,
    SessionStatus,
    ToolCallRef,
    preview,
)
from vigil.schema.transcript import short_json

SUMMARY_CHARS = 200
"""Temporal UI shows a summary on one line: keep it short."""
ARGUMENT_CHARS = 80
"""A call's arguments in a summary, cut with a mark where they go on."""


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def tool_call(
    step: int,
    call: ToolCallRef,
    edited: dict[str, Any] | None,
    by: str | None,
    said: str | None = None,
) -> str:
    """The run_tool activity: the arguments that run (and who edited them), and on the
    step's first call what the model said with it. (The model activity's own summary is
    fixed when it is scheduled, before the reply; its result holds the reply's words.)"""
    if edited is None:
        text = f"step {step}: {call.name} {preview(call.arguments_preview, ARGUMENT_CHARS)}"
    else:
        shown = short_json(edited, ARGUMENT_CHARS)
        text = f"step {step}: {call.name} {shown} (arguments edited by {by or '?'})"
    words = " ".join((said or "").split())
    room = SUMMARY_CHARS - len(text) - len(' · model said: ""')
    if words and room >= 20:
        text += f' · model said: "{preview(words, room)}"'
    return preview(text, SUMMARY_CHARS)


def record(
    messages: Sequence[MessageIn],
    events: Sequence[EventIn],
    *,
    opens: bool = False,
    remembers: bool = False,
) -> str:
    """The record activity, naming who did each human action it records (and whether it
    also opens the session or remembers its outcome)."""
    text = f"record {len(messages)} messages, {len(events)} events"
    if opens:
        text = "open session, " + text
    if remembers:
        text += ", remember the outcome"
    return preview(text + _actions(events, ": "), SUMMARY_CHARS)


def model_call(step: int, events: Sequence[EventIn]) -> str:
    """A model activity, naming who did each human action its records carry."""
    return preview(f"step {step}: model" + _actions(events, ", recording "), SUMMARY_CHARS)


def _actions(events: Sequence[EventIn], lead: str) -> str:
    actions = [f"{e.kind} by {e.actor}" for e in events if e.actor]
    return lead + "; ".join(dict.fromkeys(actions)) if actions else ""


def approval_timer(pending: PendingApproval) -> str:
    return preview(
        f"waiting for approval {pending.approval_id}: {pending.tool} "
        f"{preview(pending.arguments_preview, ARGUMENT_CHARS)}, "
        f"expires {_when(pending.expires_at)}",
        SUMMARY_CHARS,
    )


def sleep_timer(wake_at: datetime) -> str:
    return f"sleeping until {_when(wake_at)}"


def ask_timer(question: str, expires: datetime) -> str:
    return preview(f"waiting for a human reply to {question!r}, expires {_when(expires)}", 200)


def paused_timer(by: str | None) -> str:
    return f"paused by {by or 'a human'}: waiting for resume"


def bounded_by(summary: str | None, until: datetime | None, deadline: datetime | None) -> str:
    """A wait's timer: what it waits for, or the session's deadline when that comes first."""
    if deadline is not None and (until is None or deadline < until):
        return preview(f"{summary or 'waiting'}; session deadline {_when(deadline)}", 200)
    return summary or "waiting"


def approval_details(
    session_id: str, namespace: str, pending: PendingApproval, address: str | None = None
) -> str:
    """The current details' part for a pending approval: the call and how to decide it
    (the ``temporal`` command names the Temporal address when the session knows it)."""
    signal = json.dumps({"approval_id": pending.approval_id, "by": "YOUR_NAME"})
    at = f" --address {address}" if address else ""
    return (
        f"\n\n**waiting for approval `{pending.approval_id}`**: `{pending.tool}` "
        f"`{pending.arguments_preview}` (expires {_when(pending.expires_at)})\n\n"
        f"approve: `vigil approve {session_id} {pending.approval_id} --by YOUR_NAME` "
        f"(add `--edit '{{...}}'` to change the arguments; `vigil reject` to refuse)\n\n"
        f"or: `temporal workflow signal --namespace {namespace} --workflow-id {session_id} "
        f"--name {names.SIG_APPROVE} --input '{signal}'{at}`"
    )


def status_after(action: str, status: SessionStatus) -> SessionStatus:
    """The status an acknowledged action leads to (the loop applies it a moment later)."""
    if action in ("approve", "reject") and status == SessionStatus.WAITING_APPROVAL:
        return SessionStatus.RUNNING
    if action == "pause" and status == SessionStatus.RUNNING:
        return SessionStatus.PAUSED
    if action == "resume" and status == SessionStatus.PAUSED:
        return SessionStatus.RUNNING
    if action in ("message", "redirect") and status == SessionStatus.WAITING_HUMAN:
        return SessionStatus.RUNNING
    if action == "wake" and status == SessionStatus.SLEEPING:
        return SessionStatus.RUNNING
    return status
