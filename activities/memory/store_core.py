"""The memory store's base layer: its settings, checked as the store is made, the counters
of how its searches ran, and the helpers the other layers share: the check on an agent id
and the agent's memory count, kept a while per store, which steers the vector index's
``ef_search``. A layer of ``MemoryStore`` (``activities.memory.store``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.search import (
    _AGENT_COUNT,
    COMMON_WORD_ROWS,
    COUNT_TTL_SECONDS,
    EF_SEARCH_MAX,
    TEXT_SCAN_LIMIT,
    TextStatistics,
)
from vigil.activities.memory.values import _check_text
from vigil.activities.record.lean import Statements, engine_of
from vigil.schema.limits import MAX_AGENT_ID

CONCURRENT_HALVES = 4
"""Hybrid recalls per store that may run their two halves at once (two connections each)."""


class _MemoryStoreCore:
    """The store's settings and the helpers every layer uses (a layer of MemoryStore)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        embedder: Embedder,
        *,
        redact: bool = False,
        merge_threshold: float = 0.95,
        half_life_days: float = 30.0,
        recency_weight: float = 0.25,
        importance_weight: float = 0.25,
        rrf_k: int = 60,
        text_match: Literal["any", "all"] = "any",
        text_scan_limit: int = TEXT_SCAN_LIMIT,
        common_word_rows: int = COMMON_WORD_ROWS,
        ef_search: int | None = None,
        concurrent_halves: int = CONCURRENT_HALVES,
        text_statistics: bool = True,
    ) -> None:
        if not 0.0 < merge_threshold <= 1.0:
            raise ValueError("merge_threshold must be in (0, 1]")
        if half_life_days <= 0:
            raise ValueError("half_life_days must be positive")
        if not (0.0 <= recency_weight <= 1.0 and 0.0 <= importance_weight <= 1.0):
            raise ValueError("recency_weight and importance_weight must be in [0, 1]")
        if text_scan_limit < 1:
            raise ValueError("text_scan_limit must be positive")
        if common_word_rows < 1:
            raise ValueError("common_word_rows must be positive")
        if ef_search is not None and not 1 <= ef_search <= EF_SEARCH_MAX:
            raise ValueError(f"ef_search must be in 1..{EF_SEARCH_MAX}")
        if concurrent_halves < 0:
            raise ValueError("concurrent_halves must be 0 or more")
        self._sessionmaker = sessionmaker
        self._engine = engine_of(sessionmaker)
        self.embedder = embedder
        self.redact = redact
        self.merge_threshold = merge_threshold
        """Cosine similarity at or above which a new memory merges into an existing one."""
        self.half_life_days = half_life_days
        """Age at which the recency factor has fallen halfway to its floor."""
        self.recency_weight = recency_weight
        """Share of the score recency can take away: a very old memory keeps 1 - weight."""
        self.importance_weight = importance_weight
        """Share of the score importance can take away: importance 0 keeps 1 - weight."""
        self.rrf_k = rrf_k
        self.text_match = text_match
        """How a plain query (no search syntax) matches in full text: memories holding
        ``any`` of its words (better recall, costs more on big stores) or ``all``."""
        self.text_scan_limit = text_scan_limit
        """At most this many matching rows are ranked per step of the full-text search."""
        self.common_word_rows = common_word_rows
        """Words in more rows than this (or than ``text_scan_limit``) are common: the
        ladder's combinations holding a rarer word run first (``text_ladder``)."""
        self.ef_search = ef_search
        """A fixed ``hnsw.ef_search`` for recall; None follows the agent's memory count
        (``ef_search_for``)."""
        self._counts: dict[str, tuple[int, float]] = {}
        self.vector_searches: Counter[str] = Counter()
        """How vector searches ended: ``index`` (the HNSW index gave enough), ``complete``
        (it gave all the agent has), ``widened`` (a wider ef_search was needed) or
        ``exact`` (the agent's rows were scanned); ``dedupe_*`` for the write path."""
        self.concurrent_halves = concurrent_halves
        """How many hybrid recalls of this store may run their full-text half on a second
        connection, beside the vector half, at once; the others (and all with 0) run the
        halves one after the other on one connection. Each such recall holds two pooled
        connections for its duration."""
        self._halves_in_flight = 0
        self.hybrid_runs: Counter[str] = Counter()
        """How hybrid recalls ran: ``concurrent`` or ``sequential``."""
        self.text_statistics = text_statistics
        """Whether the full-text ladder skips the steps PostgreSQL's statistics say no row
        can match (``text_ladder``); the statistics are read at most once per
        ``STATISTICS_TTL_SECONDS`` per store."""
        self._statistics: tuple[TextStatistics | None, float] | None = None
        self.text_steps: Counter[str] = Counter()
        """Full-text ladder steps ``sent`` to the search (a step may stop the search
        early), ``predicted_empty`` ones left out because the statistics said nothing
        would match them, and steps ``split`` in two around common words."""

    @staticmethod
    def _check_agent(agent_id: str) -> None:
        if not agent_id or len(agent_id) > MAX_AGENT_ID:
            raise ValueError(f"agent_id must be 1..{MAX_AGENT_ID} characters")
        _check_text(agent_id, "agent_id")

    def _kept_count(self, agent_id: str) -> int | None:
        """The agent's memory count as last read, while it is fresh (``_memory_count``)."""
        cached = self._counts.get(agent_id)
        if cached is None or time.monotonic() - cached[1] >= COUNT_TTL_SECONDS:
            return None
        return cached[0]

    async def _memory_count(self, db: Statements, agent_id: str) -> int:
        """How many memories the agent has at the embedder's dimension, counted at most
        once per ``COUNT_TTL_SECONDS`` per store (it only steers ``ef_search``)."""
        kept = self._kept_count(agent_id)
        if kept is not None:
            return kept
        count = int(
            (
                await db.execute(_AGENT_COUNT, {"agent_id": agent_id, "dim": self.embedder.dim})
            ).scalar_one()
        )
        if len(self._counts) > 10_000:
            self._counts.clear()
        self._counts[agent_id] = (count, time.monotonic())
        return count
