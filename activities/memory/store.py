"""Long-term memory in PostgreSQL: the write pipeline and hybrid recall.

Every query on the ``memories`` table lives in this module and the ones beside it that
it draws on: ``records`` (the row types), ``values`` (the checks on text and vectors),
``writes`` (the statements of add, forget, get and history) and ``search`` (recall's
vector and full-text searches). ``MemoryStore`` runs them; it is built in layers, each a
module of its own: ``store_core`` (its settings, the check on an agent id, the agent's
memory count), ``store_vector`` (the vector searches and ``nearest``), ``store_writes``
(``add``, ``forget``, ``get``, ``live_ids`` and ``history``), ``store_text`` (the
full-text searches) and this module (``recall``, which fuses and weighs what the two
searches found), which re-exports the names other modules import. The queries run
inside ``activities.record.rls.acting_for(agent_id)``, so row-level security confines
them to the agent's rows, and they also filter on ``agent_id`` themselves. The full-text
candidates come from a SECURITY DEFINER function that searches only the acting agent's
rows (see ``MemoryStore._text_candidates``): under the policies PostgreSQL could not use
the GIN index for that match.

Write: (optional redaction) -> embed -> near-duplicate merge -> supersede on the same
subject -> insert, in one transaction under an advisory lock per (agent, kind), so two
workers remembering the same thing at once cannot both insert it. A memory without a
subject is compared with the agent's subject-less memories of its kind through the HNSW
index (approximate, with an exact fallback for small agents); a memory about a subject
is compared exactly with the live versions of that subject. Memories embedded at another
dimension (before the embedder changed) are only found by their subject.

Recall: vector candidates from the HNSW index of the embedder's dimension plus full-text
candidates from the GIN index, fused by reciprocal rank fusion and weighted by recency
and importance.

Text rule: ``memories.content`` has no companion flag column, so unlike the session
record it cannot hold escaped text (``schema.textcodec``). Memory text holding NUL or a
lone surrogate, which PostgreSQL TEXT cannot store, is rejected with ``ValueError``
rather than silently altered; recall queries are only read, so such characters are
dropped from them.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any

from vigil.activities.memory.provenance import identity_of
from vigil.activities.memory.records import (
    MAX_CONTENT,
    MAX_KIND,
    MAX_SUBJECT,
    AddResult,
    Forgotten,
    MemoryRecord,
    Recalled,
    RecallMode,
)
from vigil.activities.memory.search import (
    EF_SEARCH_MAX,
    TextStatistics,
    _checked_vector_sql,
    _has_search_operators,
    _vector_sql,
    ef_search_for,
    live_memories_bounded,
    text_ladder,
    text_ranking,
)
from vigil.activities.memory.store_text import _TextRecall
from vigil.activities.memory.values import _UNSTORABLE, _aware, _vector_literal
from vigil.schema.limits import MAX_AGENT_ID

__all__ = [
    "EF_SEARCH_MAX",
    "MAX_AGENT_ID",
    "MAX_CONTENT",
    "MAX_KIND",
    "MAX_SUBJECT",
    "AddResult",
    "Forgotten",
    "MemoryRecord",
    "MemoryStore",
    "RecallMode",
    "Recalled",
    "TextStatistics",
    "_checked_vector_sql",
    "_vector_sql",
    "ef_search_for",
    "live_memories_bounded",
    "text_ladder",
    "text_ranking",
]


class MemoryStore(_TextRecall):
    """Long-term memory of agents: ``add`` (dedupe, supersede), ``recall``, ``get``, ``history``.

    ``redact`` replaces secrets and personal data (``activities.memory.redact``) in the
    content and subject before anything is embedded or stored; two subjects that differ
    only in a redacted part (two e-mail addresses) then become the same subject.
    Subjects are compared case-insensitively, ignoring surrounding blanks.
    """

    async def recall(
        self,
        agent_id: str,
        query: str,
        *,
        k: int = 10,
        kinds: list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        include_superseded: bool = False,
        mode: RecallMode = "hybrid",
        now: datetime | None = None,
    ) -> list[Recalled]:
        """The ``k`` memories of this agent that best answer ``query``.

        ``mode`` picks the candidate searches: ``hybrid`` (vector and full text, fused by
        reciprocal rank fusion), ``vector`` or ``text``. Candidates are then weighted by
        recency (``half_life_days``) and importance. ``since`` is inclusive, ``until``
        exclusive, both on ``created_at``. ``now`` fixes the clock for recency.

        A plain query matches memories holding any of its words; a query using web-search
        syntax (quotes, ``-word``, ``or``) keeps ``websearch_to_tsquery``'s meaning.
        """
        self._check_agent(agent_id)
        if k < 1:
            raise ValueError("k must be at least 1")
        if mode not in ("hybrid", "vector", "text"):
            raise ValueError(f"unknown recall mode {mode!r}")
        _aware(since, "since")
        _aware(until, "until")
        now = _aware(now, "now") or datetime.now(UTC)
        # Nothing is stored from a query, so characters TEXT cannot hold are just dropped.
        query = _UNSTORABLE.sub("", query)
        if not query.strip():
            raise ValueError("recall query is empty")

        candidates = max(40, 2 * k)
        identity = identity_of(self.embedder)
        params: dict[str, Any] = {
            "agent_id": agent_id,
            "n": candidates,
            "embedder": identity.name,
            "version": identity.version,
        }
        # Only vectors of the agent's active embedder are compared (provenance).
        where = [
            "m.agent_id = :agent_id",
            "m.forgotten_at IS NULL",
            "m.embedder = :embedder AND m.embedder_version = :version",
        ]
        if kinds:
            where.append("m.kind = ANY(:kinds)")
            params["kinds"] = list(kinds)
        if since is not None:
            where.append("m.created_at >= :since")
            params["since"] = since
        if until is not None:
            where.append("m.created_at < :until")
            params["until"] = until
        if not include_superseded:
            where.append("m.superseded_by IS NULL")
        filters = " AND ".join(where)

        vector_hits: list[Any] = []
        text_hits: list[Any] = []
        any_term = self.text_match == "any" and not _has_search_operators(query)
        statistics = None
        if mode in ("hybrid", "text") and any_term and self.text_statistics:
            statistics = await self._read_text_statistics()
        text_search = functools.partial(
            self._text_candidates,
            agent_id=agent_id,
            query=query,
            any_term=any_term,
            statistics=statistics,
            kinds=list(kinds) if kinds else None,
            since=since,
            until=until,
            live_only=not include_superseded,
            n=candidates,
        )
        # Hybrid recall runs its two halves at once, each on its own connection, so it
        # waits for the slower half rather than for both; past ``concurrent_halves`` at
        # once it runs them one after the other. Each half acts for the agent on a
        # connection bound to it (``bound_acting_for``): a statement is a round trip.
        text_task: asyncio.Task[list[Any]] | None = None
        if mode == "hybrid" and self._halves_in_flight < self.concurrent_halves:
            self._halves_in_flight += 1
            text_task = asyncio.ensure_future(self._text_alone(agent_id, text_search))
            self.hybrid_runs["concurrent"] += 1
        elif mode == "hybrid":
            self.hybrid_runs["sequential"] += 1
        try:
            if mode == "text":
                text_hits = await self._text_alone(agent_id, text_search)
            else:
                # The query is embedded while the full-text half already runs.
                [vector] = await self.embedder.embed([query])
                vector_params = {**params, "vector": _vector_literal(vector, self.embedder.dim)}
                found = await self._recall_vector(agent_id, identity, vector_params, filters)
                vector_hits = sorted(found, key=lambda row: (row.distance, row.id))
                if text_task is not None:
                    text_hits = await text_task
                elif mode == "hybrid":
                    text_hits = await self._text_alone(agent_id, text_search)
        finally:
            if text_task is not None:
                try:
                    if not text_task.done():
                        text_task.cancel()
                        # Waits for it to end without raising its outcome (already
                        # raised above, or no longer wanted); a cancellation of this
                        # recall still propagates.
                        await asyncio.wait([text_task])
                    if text_task.done() and not text_task.cancelled():
                        text_task.exception()  # retrieved: never logged as unhandled
                finally:
                    self._halves_in_flight -= 1

        vector_rank = {
            row.id: (rank, 1.0 - row.distance) for rank, row in enumerate(vector_hits, 1)
        }
        text_rank = {row.id: rank for rank, row in enumerate(text_hits, 1)}
        # Each half read its rows' columns with its ids, under the agent's policies.
        by_id = {row.id: row for row in [*text_hits, *vector_hits]}
        # Every candidate is scored; only the ``k`` kept become ``Recalled``.
        scored = sorted(
            (
                (self._weigh(row, vector_rank.get(i), text_rank.get(i), now), i)
                for i, row in by_id.items()
            ),
            key=lambda pair: (-pair[0], -pair[1]),
        )
        return [
            self._recalled(by_id[i], score, vector_rank.get(i), text_rank.get(i))
            for score, i in scored[:k]
        ]

    def _weigh(
        self,
        row: Any,
        vector: tuple[int, float] | None,
        text_rank: int | None,
        now: datetime,
    ) -> float:
        """A candidate's score: fused relevance x recency factor x importance factor."""
        fused = 0.0
        if vector is not None:
            fused += 1.0 / (self.rrf_k + vector[0])
        if text_rank is not None:
            fused += 1.0 / (self.rrf_k + text_rank)
        age_days = max(0.0, (now - row.created_at).total_seconds() / 86400.0)
        recency = 0.5 ** (age_days / self.half_life_days)
        recency_factor = 1.0 - self.recency_weight + self.recency_weight * recency
        importance_factor = 1.0 - self.importance_weight + self.importance_weight * row.importance
        return float(fused * recency_factor * importance_factor)

    @staticmethod
    def _recalled(
        row: Any, score: float, vector: tuple[int, float] | None, text_rank: int | None
    ) -> Recalled:
        return Recalled(
            id=row.id,
            kind=row.kind,
            subject=row.subject,
            content=row.content,
            importance=row.importance,
            created_at=row.created_at,
            score=score,
            superseded=row.superseded_by is not None,
            vector_rank=vector[0] if vector is not None else None,
            text_rank=text_rank,
            similarity=vector[1] if vector is not None else None,
        )
