"""The memory store's vector searches: recall's candidates from the HNSW index of the
embedder's dimension, checked against the agent's active embedder, widened or made exact
when the index yields fewer than the agent has (``_vector_candidates``, which the write's
near-duplicate search uses too), and ``nearest``, one search for diagnostics. A layer of
``MemoryStore`` (``activities.memory.store``).
"""

from __future__ import annotations

import math
from typing import Any

from vigil.activities.memory.provenance import (
    EmbedderIdentity,
    identity_of,
    require_for_recall,
    require_identity,
)
from vigil.activities.memory.search import (
    _RECALLED_COLUMNS,
    EF_SEARCH_MAX,
    _checked_vector_sql,
    _count_sql,
    _vector_sql,
    _with_kinds,
    ef_search_for,
)
from vigil.activities.memory.store_core import _MemoryStoreCore
from vigil.activities.memory.values import _vector_literal
from vigil.activities.record.lean import Statements
from vigil.activities.record.rls import acting_for, bound_acting_for, lean_acting_for
from vigil.activities.record.sql import sql


class _VectorRecall(_MemoryStoreCore):
    """Searches through the vector index (a layer of MemoryStore)."""

    async def _recall_vector(
        self, agent_id: str, identity: EmbedderIdentity, params: dict[str, Any], filters: str
    ) -> list[Any]:
        """Recall's vector candidates, with their columns, checked against the agent's
        active embedder.

        ``hnsw.ef_search`` follows the agent's memory count, which the store keeps a
        while. Known, the search runs on a connection bound to the agent with that
        setting, the embedder check riding in the search itself: one round trip, and one
        more (the count of what the agent has) when the index yields fewer than wanted.
        Unknown, or when the index search must be widened or made exact, the work runs
        in a transaction (``_vector_candidates``).
        """
        candidates = int(params["n"])
        kinds = params.get("kinds")
        count = self._kept_count(agent_id)
        if not self.ef_search and count is None:
            async with lean_acting_for(self._engine, agent_id) as db:
                ef = self._recall_ef(await self._memory_count(db, agent_id), candidates)
                # The embedder check also sets hnsw.ef_search: one round trip.
                await require_for_recall(db, agent_id, identity, ef_search=ef)
                return await self._vector_candidates(
                    db, params, filters, candidates, ef=ef, ef_set=True, columns=_RECALLED_COLUMNS
                )
        ef = self._recall_ef(count or 0, candidates)
        settings = {"hnsw.ef_search": str(ef)}
        checked = _with_kinds(
            sql(_checked_vector_sql(self.embedder.dim, filters, _RECALLED_COLUMNS)), kinds
        )
        async with bound_acting_for(self._engine, agent_id, settings=settings) as db:
            rows = list(await db.execute(checked, params))
        # Checked outside the block: a refusal is no reason to discard the connection.
        active = rows[0]
        require_identity(
            agent_id, identity, active.active_embedder, active.active_version, active.active_dim
        )
        first = [row for row in rows if row.id is not None]
        if self._settled(first, candidates):
            return first
        async with bound_acting_for(self._engine, agent_id, settings=settings) as db:
            available = await self._available(db, params, filters)
        if self._settled(first, candidates, available):
            return first
        async with lean_acting_for(self._engine, agent_id, settings=settings) as db:
            return await self._vector_candidates(
                db,
                params,
                filters,
                candidates,
                ef=ef,
                ef_set=True,
                columns=_RECALLED_COLUMNS,
                first=first,
                available=available,
            )

    async def nearest(
        self,
        agent_id: str,
        vector: list[float],
        *,
        k: int = 10,
        exact: bool = False,
        ef_search: int | None = None,
    ) -> list[tuple[int, float]]:
        """(id, cosine distance) of the agent's ``k`` live memories nearest to ``vector``.

        One search, no fallback, for diagnostics and the benchmark: an exact scan, or the
        HNSW index alone with ``ef_search`` (default: what ``recall`` would use; sorting
        is disabled so the planner uses the index even where it would rather scan the
        agent's rows exactly).
        """
        self._check_agent(agent_id)
        identity = identity_of(self.embedder)
        params = {
            "agent_id": agent_id,
            "n": k,
            "vector": _vector_literal(vector, self.embedder.dim),
            "embedder": identity.name,
            "version": identity.version,
        }
        filters = (
            "m.agent_id = :agent_id AND m.superseded_by IS NULL AND m.forgotten_at IS NULL"
            " AND m.embedder = :embedder AND m.embedder_version = :version"
        )
        statement = _vector_sql(self.embedder.dim, filters, exact=exact)
        async with acting_for(self._sessionmaker, agent_id) as db:
            if not exact:
                ef = ef_search or self.ef_search
                if ef is None:
                    ef = ef_search_for(await self._memory_count(db, agent_id), max(40, 2 * k))
                await db.execute(sql(f"SET LOCAL hnsw.ef_search = {int(ef)}"))
                await db.execute(sql("SET LOCAL enable_sort = off"))
            rows = await db.execute(sql(statement), params)
            return sorted(((row.id, row.distance) for row in rows), key=lambda r: (r[1], r[0]))

    def _recall_ef(self, count: int, candidates: int) -> int:
        """Recall's ``hnsw.ef_search``: the fixed setting, else one following ``count``."""
        return max(candidates, self.ef_search or ef_search_for(count, candidates))

    async def _vector_candidates(
        self,
        db: Statements,
        params: dict[str, Any],
        filters: str,
        candidates: int,
        *,
        purpose: str = "",
        ef: int | None = None,
        ef_set: bool = False,
        columns: str = "",
        first: list[Any] | None = None,
        available: int | None = None,
    ) -> list[Any]:
        """The nearest ``candidates`` memories passing ``filters``, nearest first.

        pgvector's HNSW scan (0.6) yields at most ``ef_search`` neighbours and filters
        them afterwards, so an agent holding a small share of the index gets fewer than
        asked for. When that happens and the agent does have more matching rows, the
        search is repeated with an ``ef_search`` scaled by the share seen, and where that
        cannot reach (or still falls short) the agent's rows are scanned exactly. How
        each search ended is counted in ``vector_searches`` (keys prefixed by ``purpose``).
        ``ef_set``: the transaction already set ``hnsw.ef_search`` to ``ef``. ``columns``
        (``, m.kind, ...``) are read with each id. ``first``: the index search's rows,
        when the caller ran it already (recall, with its embedder check); ``available``:
        how many rows pass ``filters``, when the caller counted them already.
        """
        kinds = params.get("kinds")
        dim = self.embedder.dim
        indexed = _with_kinds(sql(_vector_sql(dim, filters, exact=False, columns=columns)), kinds)
        ef = max(candidates, ef or candidates)
        if not ef_set:
            await db.execute(sql(f"SET LOCAL hnsw.ef_search = {ef}"))
        hits = first if first is not None else list(await db.execute(indexed, params))
        if self._settled(hits, candidates, purpose=purpose):
            return hits
        # Fewer than asked: either that is all the agent has, or the index filtered them.
        if available is None:
            available = await self._available(db, params, filters)
        if self._settled(hits, candidates, available, purpose=purpose):
            return hits
        if hits:
            wider = math.ceil(candidates * ef / len(hits) * 1.5)
            if wider <= EF_SEARCH_MAX:
                await db.execute(sql(f"SET LOCAL hnsw.ef_search = {wider}"))
                hits = list(await db.execute(indexed, params))
                if len(hits) >= available:
                    self.vector_searches[purpose + "widened"] += 1
                    return hits
        self.vector_searches[purpose + "exact"] += 1
        exact = _with_kinds(sql(_vector_sql(dim, filters, exact=True, columns=columns)), kinds)
        return list(await db.execute(exact, params))

    def _settled(
        self, hits: list[Any], candidates: int, available: int | None = None, *, purpose: str = ""
    ) -> bool:
        """Whether an index search's ``hits`` are all there is to have: as many as wanted,
        or (``available`` counted) all the agent has. Counted in ``vector_searches``."""
        if len(hits) >= candidates:
            self.vector_searches[purpose + "index"] += 1
            return True
        if available is not None and len(hits) >= available:
            self.vector_searches[purpose + "complete"] += 1
            return True
        return False

    async def _available(self, db: Statements, params: dict[str, Any], filters: str) -> int:
        """How many of the agent's memories pass ``filters`` (a vector search's ceiling)."""
        counted = _with_kinds(sql(_count_sql(self.embedder.dim, filters)), params.get("kinds"))
        return int((await db.execute(counted, params)).scalar_one())
