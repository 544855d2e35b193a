"""The worker's context cache stays within its bounds (sessions, bytes, recall age)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from vigil.activities.context_cache import (
    ContextCache,
    ContextCacheConfig,
    SessionWindow,
    missing_seqs,
)
from vigil.activities.record.store import StoredMessage

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _msg(seq: int, size: int = 10) -> StoredMessage:
    return StoredMessage(
        session_id="s",
        seq=seq,
        role="user",
        content="x" * size,
        step=0,
        name=None,
        tool_calls=None,
        tool_call_id=None,
        created_at=NOW,
    )


def _window(seqs: list[int], max_recent: int = 10, size: int = 10) -> SessionWindow:
    recent = [_msg(s, size) for s in seqs]
    last = seqs[-1] if seqs else -1
    return SessionWindow(
        agent_id="a",
        created_at=NOW,
        max_recent=max_recent,
        recent=recent,
        last_seq=last,
        gaps=missing_seqs(recent, max_recent, last),
    )


def test_least_recently_used_sessions_go_first() -> None:
    cache = ContextCache(ContextCacheConfig(sessions=2))
    cache.keep("one", _window([0]))
    cache.keep("two", _window([0]))
    assert cache.window("one") is not None  # now the most recently used
    cache.keep("three", _window([0]))
    assert cache.window("two") is None
    assert cache.window("one") is not None and cache.window("three") is not None


def test_bytes_bound_evicts_until_it_fits() -> None:
    cache = ContextCache(ContextCacheConfig(max_bytes=30_000))
    for name in ("a", "b", "c"):
        cache.keep(name, _window(list(range(5)), size=2_000))
    assert cache.bytes <= 30_000
    assert cache.window("a") is None and cache.window("c") is not None
    cache.drop("c")
    cache.drop("b")
    assert cache.bytes == 0


def test_a_kept_recall_expires() -> None:
    cache = ContextCache(ContextCacheConfig(recall_seconds=0.0))
    key = cache.recall_key("agent", "HashingEmbedder(dim=384)", 5, "survey the river")
    cache.keep_recall(key, [])
    time.sleep(0.001)
    assert cache.recalled(key) is None and cache.bytes == 0
    fresh = ContextCache()
    fresh.keep_recall(key, [])
    assert fresh.recalled(key) == []
    assert key != fresh.recall_key("agent", "HashingEmbedder(dim=384)", 6, "survey the river")


def test_gaps_are_the_missing_seqs_a_late_write_can_still_fill() -> None:
    # A window not yet full: any seq from 0 may still arrive.
    assert missing_seqs([_msg(1), _msg(4)], 10, 4) == {0, 2, 3}
    # A full window: only seqs inside it count; older ones can never enter it.
    assert missing_seqs([_msg(s) for s in (5, 7, 8)], 3, 8) == {6}
    w = _window([0, 1, 3], max_recent=3)
    assert w.gaps == {2}
    w.merge([_msg(2), _msg(4)])
    assert [m.seq for m in w.recent] == [2, 3, 4] and w.gaps == set() and w.last_seq == 4


def test_bytes_follow_a_kept_window_as_it_grows() -> None:
    cache = ContextCache()
    w = _window([0, 1], max_recent=3, size=100)
    cache.keep("s", w)
    w.merge([_msg(2, 5_000), _msg(3, 5_000)])  # the next step's read
    cache.keep("s", w)
    assert cache.bytes == w.size > 10_000
    cache.drop("s")
    assert cache.bytes == 0
