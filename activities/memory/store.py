"""Long-term memory in PostgreSQL: the write pipeline and hybrid recall.

Every query on the ``memories`` table lives in this module and the ones beside it that
it draws on: ``records`` (the row types), ``values`` (the checks on text and vectors),
``writes`` (the statements of add, forget, get and history) and ``search`` (recall's
vector and full-text searches); this module runs them and re-exports the names other
modules import. They run inside ``activities.record.rls.acting_for(agent_id)``, so
row-level security confines them to the agent's rows, and they also filter on
``agent_id`` themselves. The full-text candidates come from a SECURITY DEFINER function
that searches only the acting agent's rows (see ``MemoryStore._text_candidates``): under
the policies PostgreSQL could not use the GIN index for that match.

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
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.provenance import (
    EmbedderIdentity,
    identity_of,
    require_for_recall,
    require_for_write,
    require_identity,
)
from vigil.activities.memory.records import (
    MAX_AGENT_ID,
    MAX_KIND,
    AddResult,
    Forgotten,
    MemoryRecord,
    Recalled,
    RecallMode,
    _add_result,
    _record,
)
from vigil.activities.memory.redact import redact as redact_text
from vigil.activities.memory.search import (
    _AGENT_COUNT,
    _LEXEMES,
    _LIVE_IDS,
    _RECALLED_COLUMNS,
    _TEXT_SEARCH_ROWS,
    _WEBSEARCH,
    _WORD_STATISTICS,
    COMMON_WORD_ROWS,
    COUNT_TTL_SECONDS,
    EF_SEARCH_MAX,
    STATISTICS_TTL_SECONDS,
    TEXT_SCAN_LIMIT,
    TextStatistics,
    _checked_vector_sql,
    _count_sql,
    _has_search_operators,
    _vector_sql,
    _with_kinds,
    ef_search_for,
    live_memories_bounded,
    text_ladder,
    text_ranking,
)
from vigil.activities.memory.values import (
    _UNSTORABLE,
    _aware,
    _check_text,
    _normal_subject,
    _vector_literal,
)
from vigil.activities.memory.writes import (
    _BEFORE_A_SUBJECT_WRITE,
    _FOR_MERGE,
    _FORGET,
    _GET,
    _HISTORY,
    _INSERT,
    _MERGE,
    _NO_SUBJECT,
    DEDUPE_CANDIDATES,
    _written,
)
from vigil.activities.record.lean import Statements, engine_of
from vigil.activities.record.rls import acting_for, bound_acting_for, lean_acting_for
from vigil.activities.record.sql import sql
from vigil.activities.record.store import from_jsonb
from vigil.schema import textcodec

__all__ = [
    "EF_SEARCH_MAX",
    "MAX_AGENT_ID",
    "MAX_KIND",
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

MERGE_LOG_LIMIT = 20
"""How many merges are kept in a memory's metadata (the count keeps going)."""
RESERVED_METADATA = ("embedder", "merges", "merge_count", "redactions")
CONCURRENT_HALVES = 4
"""Hybrid recalls per store that may run their two halves at once (two connections each)."""


class MemoryStore:
    """Long-term memory of agents: ``add`` (dedupe, supersede), ``recall``, ``get``, ``history``.

    ``redact`` replaces secrets and personal data (``activities.memory.redact``) in the
    content and subject before anything is embedded or stored; two subjects that differ
    only in a redacted part (two e-mail addresses) then become the same subject.
    Subjects are compared case-insensitively, ignoring surrounding blanks.
    """

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

    # -----------------------------------------------------------------------------------
    # Write

    async def add(
        self,
        agent_id: str,
        content: str,
        *,
        kind: str = "fact",
        subject: str | None = None,
        importance: float = 0.5,
        source_session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
        key: str | None = None,
        first_attempt: bool = False,
    ) -> AddResult:
        """Remember ``content``: merge it into a near-duplicate, supersede the live memory
        about the same ``subject``, or insert it.

        A merge keeps the existing memory, raises its importance to the larger of the two
        and logs the merge in its metadata. A supersede keeps the old memory (marked
        ``superseded_by``), so ``history`` and ``include_superseded`` still find it.
        ``created_at`` backdates a memory (imports, tests); it defaults to now.
        ``key`` makes the write idempotent (a tool call's or a session outcome's key): a
        second ``add`` with the agent's same key stores nothing and returns the first
        result, which a retried activity needs after a worker died mid-way: it looks for
        the key before it embeds, so a retry answers even while the embedder is down.
        ``first_attempt``: the caller's try is likely the key's first (an activity's first
        attempt), so the key is looked for only under the write's lock, in its
        transaction, one round trip fewer; an earlier write is still found there, after
        the embedding, or right after an embedding that failed. Raises ``ValueError`` for
        invalid arguments (see the module docstring on text).
        """
        self._check_agent(agent_id)
        if not kind or len(kind) > MAX_KIND:
            raise ValueError(f"kind must be 1..{MAX_KIND} characters")
        if not (math.isfinite(importance) and 0.0 <= importance <= 1.0):
            raise ValueError("importance must be between 0 and 1")
        _aware(created_at, "created_at")
        subject = _normal_subject(subject)
        for value, what in ((content, "content"), (subject, "subject"), (kind, "kind")):
            if value is not None:
                _check_text(value, what)
        counts: dict[str, int] = {}
        if self.redact:
            done = redact_text(content)
            content = done.text
            counts = dict(done.counts)
            if subject is not None:
                subject_done = redact_text(subject)
                subject = subject_done.text
                for name, n in subject_done.counts.items():
                    counts[name] = counts.get(name, 0) + n
        if not content.strip():
            raise ValueError("memory content is empty")
        extra = metadata or {}
        clash = [key for key in RESERVED_METADATA if key in extra]
        if clash:
            raise ValueError(f"metadata keys {clash} are reserved for the memory store")

        # A retry finds its first result without embedding again (one round trip).
        if not first_attempt and (first := await self._written_before(agent_id, key)):
            return first

        # The embedding may be an HTTP call: made before the transaction holds any lock.
        try:
            [vector] = await self.embedder.embed([content])
        except Exception:
            # A first attempt may still follow an earlier write (a local activity run
            # again after its workflow task was lost): that write is the answer.
            if first_attempt and (first := await self._written_before(agent_id, key)):
                return first
            raise
        literal = _vector_literal(vector, self.embedder.dim)
        dim = self.embedder.dim
        identity = identity_of(self.embedder)
        now = datetime.now(UTC)

        # A lean transaction (``record.lean``): the write's statements straight on the
        # driver connection, as the session step's are.
        # The agent's role and the lock on its memories of this kind ride with BEGIN.
        lock = json.dumps(["vigil.memory", agent_id, kind])
        params: dict[str, Any] = {
            "agent_id": agent_id,
            "kind": kind,
            "subject": subject,
            "content": content,
            "vector": literal,
            "dim": dim,
            "embedder": identity.name,
            "version": identity.version,
        }
        async with lean_acting_for(self._engine, agent_id, lock=lock) as db:
            best: tuple[int, float] | None = None
            old_ids: list[int] = []
            if subject is not None:
                before = (await db.execute(_BEFORE_A_SUBJECT_WRITE, {**params, "key": key})).one()
                if before.written is not None:
                    # A concurrent run of the same call got here first.
                    return _add_result(from_jsonb(before.written))
                found = from_jsonb(before.active)
                active = (
                    EmbedderIdentity(found["embedder"], found["version"], int(found["dim"]))
                    if found is not None
                    else None
                )
                await require_for_write(db, agent_id, identity, active=active)
                same = [(int(i), s) for i, s in from_jsonb(before.same)]
                old_ids = [i for i, _ in same]
                scored = [(i, float(s)) for i, s in same if s is not None]
                if scored:
                    best = max(scored, key=lambda pair: (pair[1], -pair[0]))
            else:
                if key is not None and (first := await _written(db, agent_id, key)) is not None:
                    return first  # a concurrent run of the same call got here first
                await require_for_write(db, agent_id, identity)
                hits = await self._vector_candidates(
                    db, {**params, "n": DEDUPE_CANDIDATES}, _NO_SUBJECT, DEDUPE_CANDIDATES,
                    purpose="dedupe_",
                )  # fmt: skip
                if hits:
                    nearest = min(hits, key=lambda row: (row.distance, row.id))
                    best = (nearest.id, 1.0 - float(nearest.distance))

            if best is not None and best[1] >= self.merge_threshold:
                merged_id, similarity = best
                old = (await db.execute(_FOR_MERGE, {"id": merged_id})).one()
                old_meta = textcodec.decode_json(old.metadata) or {}
                entry: dict[str, Any] = {
                    "at": now.isoformat(),
                    "similarity": round(similarity, 6),
                    "importance": importance,
                    "source_session_id": source_session_id,
                    "content": content,
                }
                if extra:
                    entry["metadata"] = extra
                old_meta["merges"] = [*old_meta.get("merges", []), entry][-MERGE_LOG_LIMIT:]
                old_meta["merge_count"] = int(old_meta.get("merge_count", 0)) + 1
                await db.execute(
                    _MERGE,
                    {
                        "id": merged_id,
                        "importance": importance,
                        "metadata": textcodec.encode_json(old_meta),
                        "agent_id": agent_id,
                        "key": key,
                        "source_session_id": source_session_id,
                        "action": "merged",
                        "similarity": similarity,
                        "old_ids": [],
                    },
                )
                return AddResult(
                    id=merged_id, action="merged", similarity=similarity, redactions=counts
                )

            stored_meta: dict[str, Any] = {**extra, "embedder": self.embedder.name}
            if counts:
                stored_meta["redactions"] = counts
            action: Literal["superseded", "inserted"] = "superseded" if old_ids else "inserted"
            new_id: int = (
                await db.execute(
                    _INSERT,
                    {
                        "agent_id": agent_id,
                        "kind": kind,
                        "subject": subject,
                        "content": content,
                        "importance": importance,
                        "dim": dim,
                        "vector": literal,
                        "source_session_id": source_session_id,
                        "metadata": textcodec.encode_json(stored_meta),
                        "created_at": created_at,
                        "embedder": identity.name,
                        "version": identity.version,
                        "old_ids": old_ids,
                        "key": key,
                        "action": action,
                        "similarity": None,
                    },
                )
            ).scalar_one()
            return AddResult(
                id=new_id, action=action, superseded_ids=tuple(old_ids), redactions=counts
            )

    async def _written_before(self, agent_id: str, key: str | None) -> AddResult | None:
        """An earlier write's result under ``key``, read outside any transaction (one
        statement on the agent-bound connection); None without a key (nothing read)."""
        if key is None:
            return None
        async with bound_acting_for(self._engine, agent_id) as bound:
            return await _written(bound, agent_id, key)

    # -----------------------------------------------------------------------------------
    # Read

    async def get(self, agent_id: str, memory_id: int) -> MemoryRecord | None:
        """One memory of this agent (live or superseded), or None."""
        async with acting_for(self._sessionmaker, agent_id) as db:
            row = (await db.execute(_GET, {"agent_id": agent_id, "id": memory_id})).one_or_none()
        return _record(row) if row is not None else None

    async def live_ids(self, agent_id: str, ids: list[int]) -> set[int]:
        """Which of ``ids`` are memories of this agent recall may still return (not
        forgotten, superseded or erased): how a kept recall result is checked."""
        async with acting_for(self._sessionmaker, agent_id) as db:
            rows = await db.execute(_LIVE_IDS, {"agent_id": agent_id, "ids": ids})
            return {int(row.id) for row in rows}

    async def forget(
        self, agent_id: str, memory_id: int, *, by: str, reason: str | None = None
    ) -> Forgotten | None:
        """Forget a memory of this agent: it stays (with who, when and why) for history,
        and recall, dedupe and supersede never see it again. When it was current, the
        memories it had superseded are current again: forgetting a wrong correction
        restores what was known before. Forgetting a forgotten memory
        changes nothing (``Forgotten.now`` is false). None when the agent has no such memory.
        """
        self._check_agent(agent_id)
        for value, what in ((by, "by"), (reason, "reason")):
            if value is not None:
                _check_text(value, what)
        async with acting_for(self._sessionmaker, agent_id) as db:
            params = {"agent_id": agent_id, "id": memory_id, "by": by, "reason": reason}
            done = (await db.execute(_FORGET, params)).one()
            row = (await db.execute(_GET, {"agent_id": agent_id, "id": memory_id})).one_or_none()
        if row is None:
            return None
        return Forgotten(_record(row), now=bool(done.forgotten), restored_ids=tuple(done.restored))

    async def history(
        self, agent_id: str, subject: str, *, kind: str | None = None
    ) -> list[MemoryRecord]:
        """Every version of what the agent knew about ``subject``, oldest first.

        Each superseding memory was written after the one it replaced, so id order is
        the order of the supersede chain. The subject is compared case-insensitively.
        """
        normal = _normal_subject(subject)
        if normal is None:
            return []
        async with acting_for(self._sessionmaker, agent_id) as db:
            rows = await db.execute(
                _HISTORY, {"agent_id": agent_id, "subject": normal, "kind": kind}
            )
            return [_record(row) for row in rows]

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

    async def _text_candidates(
        self,
        db: Statements,
        *,
        agent_id: str,
        query: str,
        any_term: bool,
        statistics: TextStatistics | None = None,
        kinds: list[str] | None,
        since: datetime | None,
        until: datetime | None,
        live_only: bool,
        n: int,
    ) -> list[Any]:
        """The current agent's best full-text matches, at most ``n``, best first.

        A plain query (``any_term``) runs as a ladder (``text_ladder``): memories holding
        all its words, then all but one, ..., then any one, stopping once ``n`` are found;
        a query with search syntax runs as written. Each step ranks at most
        ``text_scan_limit`` matching rows, so common words cannot make recall read the
        agent's whole memory. Under the policies PostgreSQL could not use the GIN index
        for the match (``tsv @@ query`` is not leakproof, so it must run after the
        policy's filter), so the search runs in ``vigil_memory_text_search``, a SECURITY
        DEFINER function that searches only the agent named by the transaction's own
        setting and returns ids (read afterwards under the policies).
        """
        if any_term:
            lexemes = list((await db.execute(_LEXEMES, {"text": query})).scalar_one() or [])
            # A word in more rows than a step ranks is common whatever the setting says: a
            # step holding it could otherwise fill its cap before reaching rarer words.
            common = min(self.common_word_rows, self.text_scan_limit)
            levels = text_ladder(lexemes, statistics, common, counts=self.text_steps)
            ranking = text_ranking(lexemes)
        else:
            ranking = (await db.execute(_WEBSEARCH, {"text": query})).scalar_one() or ""
            levels = [ranking] if ranking else []
        if not levels:
            return []  # only stop words: nothing to match
        self.text_steps["sent"] += len(levels)
        return list(
            await db.execute(
                _TEXT_SEARCH_ROWS,
                {
                    "agent_id": agent_id,
                    "levels": levels,
                    "ranking": ranking,
                    "kinds": kinds,
                    "since": since,
                    "until": until,
                    "live_only": live_only,
                    "n": n,
                    "cap": self.text_scan_limit,
                },
            )
        )

    async def _read_text_statistics(self) -> TextStatistics | None:
        """The word statistics of ``memories.tsv`` (None where there are none yet, or this
        connection's role may not read them), read at most once per
        ``STATISTICS_TTL_SECONDS``.

        They are read outside the agent's role: ``pg_stats`` shows nothing of a table
        whose row-level security applies to the reader. They describe the whole table,
        every agent's rows, as the GIN index the ladder walks does.
        """
        now = time.monotonic()
        if self._statistics is not None and now - self._statistics[1] < STATISTICS_TTL_SECONDS:
            return self._statistics[0]
        async with self._sessionmaker() as db:
            row = (await db.execute(_WORD_STATISTICS)).one_or_none()
        read: TextStatistics | None = None
        if row is not None and row.lexemes and row.shares and row.rows > 0:
            # most_common_elem_freqs lists one share per lexeme, then a minimum, maximum
            # (and null share): only the pairs are taken.
            shares = dict(zip(row.lexemes, row.shares, strict=False))
            read = TextStatistics(shares, min(shares.values()), float(row.rows))
        self._statistics = (read, now)
        return read

    async def _text_alone(
        self, agent_id: str, search: Callable[[Statements], Awaitable[list[Any]]]
    ) -> list[Any]:
        """``search`` acting for ``agent_id`` on a connection bound to it (its statements,
        the query's words then the search, need not share a transaction)."""
        async with bound_acting_for(self._engine, agent_id) as db:
            return await search(db)

    def _recall_ef(self, count: int, candidates: int) -> int:
        """Recall's ``hnsw.ef_search``: the fixed setting, else one following ``count``."""
        return max(candidates, self.ef_search or ef_search_for(count, candidates))

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

    @staticmethod
    def _check_agent(agent_id: str) -> None:
        if not agent_id or len(agent_id) > MAX_AGENT_ID:
            raise ValueError(f"agent_id must be 1..{MAX_AGENT_ID} characters")
        _check_text(agent_id, "agent_id")
