"""When a recorded event's action was done, for readers that put the record in order.

The workflow queues a person's actions (an approval's decision, a message, a pause, a
redirect, a wake, a refused input) and writes them with the session's next record: an
approval's decision lands after the result of the tool call it approved. The row's
``created_at`` is the write time; the time of the action itself is the payload's ``at``
(an ISO timestamp from ``workflow.now()``). ``vigil_action_at(payload, written)`` is the
same rule in SQL (migration 20261201_16).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from vigil.schema import event_kinds

if TYPE_CHECKING:
    from vigil.activities.record.feed import FeedItem


def action_at(payload: Mapping[str, Any] | None, written: datetime) -> datetime:
    """The payload's ``at`` when it is a timestamp with its offset, else ``written``."""
    value = (payload or {}).get("at")
    if not isinstance(value, str):
        return written
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return written
    return moment if moment.tzinfo is not None else written


def action_at_text(payload: Mapping[str, Any] | None, written: str) -> datetime:
    """``action_at`` of a JSON-ready item (its ``created_at`` as ISO text)."""
    return action_at(payload, datetime.fromisoformat(written))


def item_at(is_event: bool, data: Mapping[str, Any]) -> datetime:
    """When a live-feed item happened: a message's write time, an event's action time."""
    return action_at_text(data.get("payload") if is_event else None, str(data["created_at"]))


HOLD_LIMIT = 1000
"""Items held back waiting for a decision, at most (then shown as they came)."""


class InOrder:
    """Puts an approval's decision before the result of the tool call it approved.

    The workflow writes a decision with the session's next record, after the tool already
    ran, so a live follower reads the tool's result first. A tool result whose call asked
    for approval, with no decision read yet, is held back with everything after it until
    the decision comes (in the very next record); then all of it is shown in the order it
    happened. The catch-up from the record (in write order) goes through it the same way.

    With ``events_flow`` (a resumable stream, whose position is the last message id and
    the last event id given out) only messages are held: events are given out as they
    are read, the decision with them, and the held messages once it came, each kind in
    the order it was written, so a reader's position never passes an item not yet given.
    """

    def __init__(self, *, events_flow: bool = False) -> None:
        self._events_flow = events_flow
        self._approval_of: dict[str, str] = {}  # tool call id -> approval id
        self._asked: set[str] = set()
        self._decided: set[str] = set()
        self._held: list[FeedItem] = []
        self._awaited: str | None = None

    def take(self, item: FeedItem) -> list[FeedItem]:
        """What to show now that ``item`` was read (maybe nothing yet)."""
        self._note(item)
        if self._held and self._events_flow and item.kind == "event":
            if self._awaited in self._decided:
                return [item, *self._release_as_read()]
            return [item]
        if self._held:
            self._held.append(item)
            if self._events_flow and len(self._held) > HOLD_LIMIT:
                return self._release_as_read()
            if self._awaited in self._decided or len(self._held) > HOLD_LIMIT:
                return self._release()
            return []
        awaited = self._awaits(item)
        if awaited is not None:
            self._held, self._awaited = [item], awaited
            return []
        return [item]

    def prime(self, seen: list[FeedItem]) -> None:
        """Learn from items read before (a reader resuming mid-session): the calls of the
        last model reply and the approvals asked and decided since."""
        for item in seen:
            self._note(item)

    def rest(self) -> list[FeedItem]:
        """What is still held when the feed ends (a decision that never came)."""
        held, self._held, self._awaited = self._held, [], None
        return held

    def _note(self, item: FeedItem) -> None:
        msg = item.message
        if msg is not None and msg.role == "assistant":
            for index, call in enumerate(msg.tool_calls or []):
                self._approval_of[str(call.get("id"))] = f"a{msg.step}-{index}"
        kind = event_kinds.canonical(item.event_kind or "")
        approval_id = str((item.data.get("payload") or {}).get("approval_id", ""))
        if kind == event_kinds.APPROVAL_REQUESTED:
            self._asked.add(approval_id)
        elif kind == event_kinds.APPROVAL_DECIDED:
            self._decided.add(approval_id)

    def _awaits(self, item: FeedItem) -> str | None:
        """The approval a tool result waits to be shown after (None: none)."""
        msg = item.message
        if msg is None or msg.role != "tool" or msg.tool_call_id is None:
            return None
        approval_id = self._approval_of.get(msg.tool_call_id)
        if approval_id in self._asked and approval_id not in self._decided:
            return approval_id
        return None

    def _release_as_read(self) -> list[FeedItem]:
        shown: list[FeedItem] = []
        for item in self.rest():  # a released tool result may wait for its own decision
            shown.extend(self.take(item))
        return shown

    def _release(self) -> list[FeedItem]:
        awaited = self._awaited
        held = self.rest()

        def place(item: FeedItem) -> tuple[datetime, int]:
            at = _happened(item)
            payload = item.data.get("payload") or {}
            if (
                event_kinds.canonical(item.event_kind or "") == event_kinds.APPROVAL_DECIDED
                and str(payload.get("approval_id")) == awaited
            ):
                return min(at, first), 0  # at the latest, just before the result it approved
            return at, 1

        # In the order things happened (a stable sort: otherwise as they were read).
        first = _happened(held[0])
        held.sort(key=place)
        shown: list[FeedItem] = []
        for item in held:  # a released tool result may wait for its own decision
            shown.extend(self.take(item))
        return shown


def _happened(item: FeedItem) -> datetime:
    return item_at(item.kind == "event", item.data)
