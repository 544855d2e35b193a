"""A human action's own time, and `follow` holding a tool result back until the decision
that approved it has been read (the decision is written with the session's next record)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from vigil.activities.record.feed import FeedItem
from vigil.activities.record.order import InOrder, action_at
from vigil.activities.record.store import StoredMessage
from vigil.schema import event_kinds

T0 = datetime(2026, 12, 1, 4, 1, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def message(key: int, role: str, written: float, **fields: Any) -> FeedItem:
    msg = StoredMessage(
        session_id="s",
        seq=key,
        role=role,
        content=role,
        step=1,
        name=fields.get("name"),
        tool_calls=fields.get("tool_calls"),
        tool_call_id=fields.get("tool_call_id"),
        created_at=at(written),
    )
    data = {"role": role, "created_at": at(written).isoformat()}
    return FeedItem("message", key, "s", "a", None, data, message=msg)


def event(key: int, kind: str, written: float, **payload: Any) -> FeedItem:
    data = {"kind": kind, "payload": payload, "created_at": at(written).isoformat()}
    return FeedItem("event", key, "s", "a", kind, data)


def names(items: list[FeedItem]) -> list[str]:
    return [i.event_kind or str(i.data["role"]) for i in items]


def test_action_at_is_the_payloads_own_time_else_the_write_time() -> None:
    assert action_at({"at": at(1).isoformat()}, at(9)) == at(1)
    assert action_at({}, at(9)) == at(9)
    assert action_at(None, at(9)) == at(9)
    assert action_at({"at": "soon"}, at(9)) == at(9)
    assert action_at({"at": "2026-12-01T04:01:00"}, at(9)) == at(9)  # no offset: not ours
    assert action_at({"at": 5}, at(9)) == at(9)


def test_a_tool_result_waits_for_the_decision_that_approved_it() -> None:
    order = InOrder()
    calls = [{"id": "c0", "name": "http_fetch", "arguments": "{}"}]
    shown: list[FeedItem] = []
    for item in [
        message(1, "assistant", 0, tool_calls=calls),
        event(1, event_kinds.APPROVAL_REQUESTED, 1, approval_id="a1-0"),
        message(2, "tool", 5, tool_call_id="c0"),
    ]:
        shown += order.take(item)
    assert names(shown) == ["assistant", event_kinds.APPROVAL_REQUESTED]  # the result waits
    # The next record: a person's message sent while waiting, the decision, the reply.
    shown += order.take(message(3, "user", 6))
    shown += order.take(event(2, event_kinds.HUMAN_MESSAGE, 6, at=at(2).isoformat()))
    shown += order.take(
        event(3, event_kinds.APPROVAL_DECIDED, 6, approval_id="a1-0", at=at(3).isoformat())
    )
    shown += order.take(message(4, "assistant", 7))
    assert names(shown) == [
        "assistant",
        event_kinds.APPROVAL_REQUESTED,
        event_kinds.HUMAN_MESSAGE,
        event_kinds.APPROVAL_DECIDED,
        "tool",
        "user",
        "assistant",
    ]
    assert order.rest() == []


def test_a_decision_read_first_holds_nothing_and_the_end_releases_what_waits() -> None:
    order = InOrder()
    calls = [
        {"id": "c0", "name": "t", "arguments": "{}"},
        {"id": "c1", "name": "t", "arguments": "{}"},
    ]
    read = [
        message(1, "assistant", 0, tool_calls=calls),
        event(1, event_kinds.APPROVAL_REQUESTED, 1, approval_id="a1-0"),
        event(2, event_kinds.APPROVAL_DECIDED, 3, approval_id="a1-0", at=at(2).isoformat()),
        message(2, "tool", 4, tool_call_id="c0"),
        event(3, event_kinds.APPROVAL_REQUESTED, 5, approval_id="a1-1"),
        message(3, "tool", 8, tool_call_id="c1"),  # its decision never comes (the feed ends)
        message(4, "assistant", 9),
    ]
    shown = [s for item in read for s in order.take(item)]
    assert names(shown) == names(read[:5])
    assert names(order.rest()) == ["tool", "assistant"]


def test_with_events_flowing_each_kind_keeps_its_written_order() -> None:
    """A resumable stream holds only messages: the same record as above gives the events
    as read and the held messages after the decision, ids rising within each kind."""
    order = InOrder(events_flow=True)
    calls = [{"id": "c0", "name": "http_fetch", "arguments": "{}"}]
    read = [
        message(1, "assistant", 0, tool_calls=calls),
        event(1, event_kinds.APPROVAL_REQUESTED, 1, approval_id="a1-0"),
        message(2, "tool", 5, tool_call_id="c0"),
        event(2, event_kinds.TOOL_CALL, 5),
        message(3, "user", 6),
        event(3, event_kinds.APPROVAL_DECIDED, 6, approval_id="a1-0", at=at(3).isoformat()),
        message(4, "assistant", 7),
    ]
    shown = [s for item in read for s in order.take(item)]
    assert [(s.kind, s.key) for s in shown] == [
        ("message", 1),
        ("event", 1),
        ("event", 2),
        ("event", 3),
        ("message", 2),
        ("message", 3),
        ("message", 4),
    ]
    assert order.rest() == []
