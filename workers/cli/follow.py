"""`vigil follow`: a session's messages and the events a person cares about (approvals
asked and decided, pauses, resumes, new goals, wakes, refused inputs, agent versions,
who cancelled), in the order they happened, as text or as JSON Lines.

Everything comes from the record through the live feed (workers/feed.py): the catch-up
from the session's start, then live, in one order: the order things happened, a queued
human action (an approval's decision, a pause) at its own time, and a decision before the
result of the tool call it approved (``InOrder`` in activities/record/order.py). Each
JSON line has a ``type``: ``message``, ``approval`` (an approval asked for, with the
commands that answer it while it is pending), ``event`` (the export's event line: kind,
step, actor, reason, payload, ``created_at`` when written and ``at`` when done) or, last,
``end`` (the session's status, summary and steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vigil.activities.record.order import action_at_text
from vigil.schema import event_kinds
from vigil.schema.transcript import short_json
from vigil.workers.cli.common import command_prefix, escape, one_line, out, when

if TYPE_CHECKING:
    from vigil.activities.record.feed import FeedItem
    from vigil.schema.payloads import PendingApproval
    from vigil.workers.client import VigilClient

QUIET = frozenset(
    {
        event_kinds.SESSION_OPENED,
        event_kinds.MODEL_CALL,  # usage: counted in `show`, noise in a transcript
        event_kinds.TOOL_CALL,  # its result is the tool message
        event_kinds.HUMAN_MESSAGE,  # the message itself is shown, with who sent it
        event_kinds.CONTEXT_SUMMARY,
        event_kinds.CONTEXT_DEGRADED,  # a recall over its time budget: tuning, not the story
    }
)
"""Events that `follow` leaves out: what they say is in the messages already."""

_DECIDED = {"approve": "approved", "reject": "rejected", "fail": "failed"}


def shown(item: FeedItem) -> bool:
    """Whether `follow` shows this message or event."""
    if item.kind == "message":
        return True
    kind = event_kinds.canonical(item.event_kind or "")
    if kind == event_kinds.SESSION_ENDED:
        # The end itself is the last message and the end line; a cancel names who.
        return bool(item.data.get("actor"))
    return kind not in QUIET


def _at(data: dict[str, Any]) -> datetime | None:
    """When the event was done (a queued human action's own time), else written."""
    at = data.get("created_at")
    return action_at_text(data.get("payload"), at) if isinstance(at, str) else None


def event_json(data: dict[str, Any]) -> dict[str, Any]:
    """An event as a JSON line (the same shape as the export's event lines)."""
    at = _at(data)
    return {
        "type": "event",
        "kind": event_kinds.canonical(str(data.get("kind"))),
        "step": data.get("step"),
        "actor": data.get("actor"),
        "reason": data.get("reason"),
        "payload": data.get("payload") or {},
        "created_at": data.get("created_at"),
        "at": at.isoformat() if at else None,
    }


def event_text(data: dict[str, Any]) -> str:
    """An event in a line a person reads: what happened, who did it, and why."""
    kind = event_kinds.canonical(str(data.get("kind")))
    actor = data.get("actor")
    reason = data.get("reason")
    p: dict[str, Any] = data.get("payload") or {}
    by = f" by {actor}" if actor else ""
    why = f": {reason}" if reason else ""
    if kind == event_kinds.SESSION_PAUSED:
        return f"paused{by}{why}"
    if kind == event_kinds.SESSION_RESUMED:
        return f"resumed{by}"
    if kind == event_kinds.SESSION_WOKEN:
        return f"woken{by}{why}"
    if kind == event_kinds.SESSION_REDIRECTED:
        return f"goal changed{by}: {p.get('new_goal', '')}"
    if kind == event_kinds.SESSION_ENDED:
        return f"{p.get('status', 'ended')}{by}{why}"
    if kind == event_kinds.APPROVAL_DECIDED:
        decided = _DECIDED.get(str(p.get("decision")), str(p.get("decision")))
        text = f"{decided} {p.get('approval_id', '?')} ({p.get('tool', '?')}){by}"
        if p.get("edited_arguments") is not None:
            text += f", arguments edited to {short_json(p['edited_arguments'], 160)}"
        return text + why
    if kind == event_kinds.HUMAN_REPLY:
        return f"{actor or 'a human'} replied: {p.get('text', '')}"
    if kind == event_kinds.INPUT_REJECTED:
        return f"input refused ({p.get('signal', '?')}){why}"
    if kind == event_kinds.AGENT_VERSION_CHANGED:
        return f"agent version {p.get('from')} → {p.get('to')}{by}"
    if kind == event_kinds.AGENT_VERSION_REFUSED:
        return f"agent version {p.get('version')} refused{by} (kept {p.get('kept')}){why}"
    detail = {k: v for k, v in p.items() if v not in (None, "", [], {})}
    text = f"{kind.replace('_', ' ')}{by}{why}"
    return f"{text} {short_json(detail, 160)}" if detail else text


def print_event(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(event_json(data)), indent=None)
        return
    at = _at(data)
    stamp = when(at) if at else "-"
    # Set apart from the reason, which may end in any word ("lunch step 2" misleads).
    where = f"(step {data.get('step')}, {stamp})"
    # One line: a reason's newline must not start what looks like an event of its own.
    out.print(f"[bold blue]— {escape(one_line(event_text(data)))}[/] [dim]{where}[/]")


class Approvals:
    """The pending approvals, asked of the live session when an approval request shows
    (for its expiry, and whether it still waits); never asked again once Temporal failed."""

    def __init__(self, client: VigilClient, session_id: str) -> None:
        self._client = client
        self._session_id = session_id
        self._pending: dict[str, PendingApproval] = {}
        self._reachable = True

    async def pending(self, approval_id: str) -> PendingApproval | None:
        if approval_id not in self._pending and self._reachable:
            from vigil.workers.client import VigilError

            self._reachable = False
            with contextlib.suppress(VigilError, TimeoutError):
                st = await asyncio.wait_for(self._client.state(self._session_id), 5.0)
                self._pending = {a.approval_id: a for a in st.pending_approvals}
                self._reachable = True
        return self._pending.pop(approval_id, None)


def print_approval(
    session_id: str, data: dict[str, Any], pending: PendingApproval | None, as_json: bool
) -> None:
    """An approval request, with the commands that answer it while it waits."""
    p: dict[str, Any] = data.get("payload") or {}
    approval_id = str(p.get("approval_id", "?"))
    tool, arguments = str(p.get("tool", "?")), str(p.get("arguments", ""))
    shown = (
        f"{escape(one_line(approval_id))}: {escape(one_line(tool))}({escape(one_line(arguments))})"
    )
    vigil = command_prefix()
    approve = f"{vigil} approve {session_id} {approval_id}" if pending else None
    reject = f"{vigil} reject {session_id} {approval_id} --reason ..." if pending else None
    if as_json:
        line = {
            "type": "approval",
            "approval_id": approval_id,
            "tool": tool,
            "arguments": arguments,
            "step": data.get("step"),
            "requested_at": data.get("created_at"),
            "expires_at": pending.expires_at.isoformat() if pending else None,
            "pending": pending is not None,
            "approve": approve,
            "reject": reject,
        }
        out.print_json(json.dumps(line), indent=None)
        return
    if pending is None:
        out.print(f"[bold yellow]approval asked[/] {shown}")
        return
    out.print(f"[bold yellow]approval needed[/] {shown} [dim]expires {when(pending.expires_at)}[/]")
    out.print(f"    {approve}   |   {reject}", markup=False)
