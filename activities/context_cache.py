"""What a worker keeps between one model call of a session and the next.

Context assembly (``activities.context``) would otherwise re-read the session's whole
window, re-count its tokens and recall memories again on every step. A worker keeps, per
session, the recent messages it read (with their token counts) and the running summary it
last saw, and per recall query the memories it found; embeddings of repeated text are
kept by a caching embedder.

Nothing here is authoritative: the record in PostgreSQL is. Every call still asks the
record what changed since (messages with a seq above the last one read or filling a gap,
the newest summary's key, the session's row), so messages written by another worker or
process are picked up, and a worker without the cache (restart, another worker) rebuilds
the same context from the record. Both caches are LRUs bounded by entries and bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from vigil.activities.models.base import ChatMessage
from vigil.activities.record.store import StoredMessage

log = logging.getLogger("vigil.activities.context")

MAX_GAPS = 256
"""A window missing more seqs than this is read whole again rather than tracked."""


@dataclass(frozen=True)
class ContextCacheConfig:
    """Bounds and budgets of the worker's context cache (from the worker's settings)."""

    sessions: int = 512
    """Sessions whose window is kept (least recently used dropped first)."""
    max_bytes: int = 64 * 1024 * 1024
    """Approximate bytes of kept windows and recall results together."""
    recall_seconds: float = 30.0
    """How long a recall for the same text stands before it is run again (memories
    written meanwhile by other sessions are seen after at most this long; a forgotten,
    superseded or erased memory is never sent, it is checked on every use)."""
    embeddings: int = 4096
    """Embeddings of repeated text kept (by text hash and embedder)."""
    time_budget_ms: float | None = 50.0
    """Time context assembly may take before the step goes on with what is ready (recent
    messages and the running summary); None: no budget."""


@dataclass
class SessionWindow:
    """The recent messages of one session as last read, and its running summary."""

    agent_id: str
    created_at: datetime
    """The session row's creation time: a session erased and started again under the same
    id is another session."""
    max_recent: int
    recent: list[StoredMessage]
    last_seq: int
    """The highest seq read so far (-1: none)."""
    gaps: set[int]
    """Seqs below ``last_seq`` not yet written when read, which a later write may fill."""
    summary_key: str | None = None
    summary_text: str | None = None
    summary_upto: int | None = None
    recall_key: tuple[str, ...] | None = None
    """The recall cache key this window's session last recalled for: the read checks
    that result's memories in the same statement."""
    chats: dict[int, tuple[ChatMessage, int]] = field(default_factory=dict)
    """Each message as sent and its token cost, by seq."""
    size: int = 0

    def merge(self, new: list[StoredMessage]) -> None:
        """Add messages read since (above ``last_seq`` or filling a gap), keep the newest
        ``max_recent``, and note which seqs are still missing."""
        if new:
            by_seq = {m.seq: m for m in self.recent}
            for m in new:
                by_seq[m.seq] = m
            self.recent = [by_seq[s] for s in sorted(by_seq)][-self.max_recent :]
            self.last_seq = max(self.last_seq, self.recent[-1].seq)
        self.gaps = missing_seqs(self.recent, self.max_recent, self.last_seq)
        kept = {m.seq for m in self.recent}
        self.chats = {s: c for s, c in self.chats.items() if s in kept}
        self.size = window_bytes(self)


def missing_seqs(recent: list[StoredMessage], max_recent: int, last_seq: int) -> set[int]:
    """Seqs a late write could still add to the newest ``max_recent`` messages: below the
    newest, inside the window (from seq 0 while the window is not full)."""
    if not recent:
        return set()
    low = recent[0].seq if len(recent) >= max_recent else 0
    present = {m.seq for m in recent}
    return {s for s in range(low, last_seq) if s not in present}


def window_bytes(w: SessionWindow) -> int:
    total = 256 + len(w.summary_text or "") + 200 * len(w.recent)
    for m in w.recent:
        total += len(m.content)
        if m.tool_calls:
            total += sum(64 + len(str(c.get("arguments", ""))) for c in m.tool_calls)
    return total


@dataclass
class RecallEntry:
    found: list[Any]
    at: float
    size: int


class _Recaller(Protocol):
    async def recall(self, agent_id: str, query: str, *, k: int = 10) -> list[Any]: ...


class ContextCache:
    """Per-worker LRU of session windows and recall results (see the module's doc)."""

    def __init__(self, config: ContextCacheConfig | None = None) -> None:
        self.config = config or ContextCacheConfig()
        self._windows: OrderedDict[str, SessionWindow] = OrderedDict()
        self._recalls: OrderedDict[tuple[str, ...], RecallEntry] = OrderedDict()
        self._inflight: dict[tuple[str, ...], asyncio.Task[list[Any]]] = {}
        self._counted: dict[str, int] = {}
        """Bytes each kept window was counted at (a window's own size moves as it merges)."""
        self._bytes = 0
        self.stats: dict[str, int] = {
            "window_hit": 0,
            "window_miss": 0,
            "recall_hit": 0,
            "recall_miss": 0,
        }

    # -- windows ----------------------------------------------------------------------

    def window(self, session_id: str) -> SessionWindow | None:
        w = self._windows.get(session_id)
        if w is not None:
            self._windows.move_to_end(session_id)
        return w

    def keep(self, session_id: str, w: SessionWindow) -> None:
        self.drop(session_id)
        if not w.size:  # merge() has counted a kept one already
            w.size = window_bytes(w)
        self._windows[session_id] = w
        self._counted[session_id] = w.size
        self._bytes += w.size
        self._evict()

    def drop(self, session_id: str) -> None:
        if self._windows.pop(session_id, None) is not None:
            self._bytes -= self._counted.pop(session_id)

    # -- recall -----------------------------------------------------------------------

    @staticmethod
    def recall_key(agent_id: str, embedder: str, k: int, query: str) -> tuple[str, ...]:
        digest = hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()
        return (agent_id, embedder, str(k), digest)

    def recalled(self, key: tuple[str, ...]) -> list[Any] | None:
        entry = self._recalls.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry.at > self.config.recall_seconds:
            self._forget_recall(key)
            return None
        self._recalls.move_to_end(key)
        return entry.found

    def keep_recall(self, key: tuple[str, ...], found: list[Any]) -> None:
        self._forget_recall(key)
        size = 200 + sum(300 + len(str(getattr(m, "content", ""))) for m in found)
        self._recalls[key] = RecallEntry(found=found, at=time.monotonic(), size=size)
        self._bytes += size
        self._evict()

    def _forget_recall(self, key: tuple[str, ...]) -> None:
        old = self._recalls.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def recall_task(
        self, key: tuple[str, ...], memory: _Recaller, agent_id: str, query: str, k: int
    ) -> asyncio.Task[list[Any]]:
        """The recall for ``key``: one already running (a step that did not wait for it)
        or a new one. Its result is kept when it completes, even if no one waits."""
        task = self._inflight.get(key)
        if task is not None:
            return task
        task = asyncio.ensure_future(memory.recall(agent_id, query, k=k))
        self._inflight[key] = task

        def done(t: asyncio.Task[list[Any]]) -> None:
            self._inflight.pop(key, None)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.warning("recall failed: %s", exc.__class__.__name__)
                return
            self.keep_recall(key, t.result())

        task.add_done_callback(done)
        return task

    async def settled(self) -> None:
        """Wait for the recalls still running (a step stopped waiting for them)."""
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel recalls still running (the worker is stopping)."""
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    # -- bounds -----------------------------------------------------------------------

    def _evict(self) -> None:
        while len(self._windows) > self.config.sessions:
            self.drop(next(iter(self._windows)))
        while len(self._recalls) > 4 * self.config.sessions:
            _, r = self._recalls.popitem(last=False)
            self._bytes -= r.size
        while self._bytes > self.config.max_bytes and (self._windows or self._recalls):
            if self._recalls:
                _, r = self._recalls.popitem(last=False)
                self._bytes -= r.size
            else:
                self.drop(next(iter(self._windows)))

    @property
    def bytes(self) -> int:
        return self._bytes


class _Embedder(Protocol):
    dim: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class CachingEmbedder:
    """An embedder that keeps the vectors of the last ``entries`` distinct texts, keyed by
    the text's sha256 and the wrapped embedder (its repr names model and dimensions)."""

    def __init__(self, inner: _Embedder, entries: int = 4096) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.entries = entries
        self._kept: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._name = repr(inner)
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return self._name

    def __getattr__(self, name: str) -> Any:
        # Everything else the wrapped embedder offers (model names, versions).
        return getattr(self.inner, name)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        keys = [
            (self._name, hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest())
            for t in texts
        ]
        # The vectors kept now are taken before the wait for the others: another call may
        # evict them meanwhile.
        found: dict[tuple[str, str], list[float]] = {}
        first: dict[tuple[str, str], int] = {}
        for i, key in enumerate(keys):
            kept = self._kept.get(key)
            if kept is not None:
                found[key] = kept
                self._kept.move_to_end(key)
            elif key not in first:
                first[key] = i
        missing = list(first.values())
        if missing:
            vectors = await self.inner.embed([texts[i] for i in missing])
            for i, vector in zip(missing, vectors, strict=True):
                found[keys[i]] = self._kept[keys[i]] = vector
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        out = [list(found[key]) for key in keys]
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)
        return out

    async def aclose(self) -> None:
        await self.inner.aclose()
