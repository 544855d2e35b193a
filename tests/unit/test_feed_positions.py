"""The live feed's positions and token payloads: a cursor round-trips through its text,
refuses what is not one, moves one kind at a time; a token NOTIFY payload stays under
PostgreSQL's 8000-byte cap whatever the text and the session id."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from vigil.activities.record.feed import (
    MAX_NOTIFY_BYTES,
    FeedCursor,
    FeedItem,
    token_channel,
    token_payloads,
)


def item(kind: str, key: int) -> FeedItem:
    now = datetime.now(UTC).isoformat()
    return FeedItem(kind, key, "s", "a", None, {"created_at": now})  # type: ignore[arg-type]


def test_a_cursor_round_trips_and_moves_one_kind_at_a_time() -> None:
    start = FeedCursor.parse(None)
    assert start == FeedCursor(0, 0)
    after = start.after(item("message", 7)).after(item("event", 3))
    assert FeedCursor.parse(after.text()) == after == FeedCursor(7, 3)
    assert after.seen(item("message", 7)) and not after.seen(item("message", 8))
    assert after.seen(item("event", 2)) and not after.seen(item("event", 4))


@pytest.mark.parametrize("bad", ["x", "1", "1.2.3", "-1.2", "1.a", "9" * 30 + ".1", " . "])
def test_a_cursor_refuses_what_is_not_one(bad: str) -> None:
    with pytest.raises(ValueError):
        FeedCursor.parse(bad)


@pytest.mark.parametrize("char", ["a", "é", "\U0001f600", "\x00", "\ud800", '"'])
def test_token_payloads_fit_under_the_cap(char: str) -> None:
    session = "\U0001f600" * 200
    payloads = token_payloads(session, 12, 3, 0, char * 5000)
    assert all(len(p.encode()) < MAX_NOTIFY_BYTES for p in payloads)
    parts = [json.loads(p) for p in payloads]
    assert "".join(p["d"] for p in parts) == char * 5000
    assert [p["n"] for p in parts] == list(range(len(parts)))
    assert len(token_channel("x" * 300)) <= 63


def _at(kind: str, key: int, second: int) -> FeedItem:
    when = datetime(2026, 12, 7, 12, 0, second, tzinfo=UTC).isoformat()
    return FeedItem(kind, key, "s", "a", None, {"created_at": when})  # type: ignore[arg-type]


def test_a_page_keeps_each_kind_in_id_order_and_cuts_it_at_a_prefix() -> None:
    """Rows of an agent's sessions carry their transaction's start time, so a larger id
    can be older: sorted by time, message 10 went out before message 9 (a resume from
    10's position skipped 9), and a full page of messages kept event 101 and dropped 100
    (its position passed 100 for good)."""
    from vigil.activities.record.feed import _merged, _until_later

    merged = _merged([_at("message", 9, 5), _at("message", 10, 3)], [_at("event", 1, 4)])
    assert [(i.kind, i.key) for i in merged if i.kind == "message"] == [
        ("message", 9),
        ("message", 10),
    ]
    last = _at("message", 0, 5).data["created_at"]
    assert _until_later([_at("event", 100, 9), _at("event", 101, 1)], last) == []
    kept = _until_later([_at("event", 100, 1), _at("event", 101, 9)], last)
    assert [i.key for i in kept] == [100]
