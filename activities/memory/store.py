"""Long-term memory in PostgreSQL: the write pipeline and hybrid recall.

Every query on the ``memories`` table lives in this module. They run inside
``activities.record.rls.acting_for(agent_id)``, so row-level security confines them to
the agent's rows, and they also filter on ``agent_id`` themselves. The full-text
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
import itertools
import json
import math
import re
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, DateTime, String, TextClause, bindparam
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.provenance import (
    ACTIVE_FOR_RECALL,
    ACTIVE_SHARED_SQL,
    EmbedderIdentity,
    identity_of,
    require_for_recall,
    require_for_write,
    require_identity,
)
from vigil.activities.memory.redact import redact as redact_text
from vigil.activities.record.lean import Statements, engine_of
from vigil.activities.record.rls import acting_for, bound_acting_for, lean_acting_for
from vigil.activities.record.sql import sql
from vigil.activities.record.store import from_jsonb
from vigil.schema import textcodec

AddAction = Literal["inserted", "merged", "superseded"]
RecallMode = Literal["hybrid", "vector", "text"]

MAX_KIND = 32
MAX_AGENT_ID = 200
MERGE_LOG_LIMIT = 20
"""How many merges are kept in a memory's metadata (the count keeps going)."""
RESERVED_METADATA = ("embedder", "merges", "merge_count", "redactions")


@dataclass(frozen=True)
class AddResult:
    """What ``MemoryStore.add`` did."""

    id: int
    """The new memory, or the existing one a near-duplicate was merged into."""
    action: AddAction
    superseded_ids: tuple[int, ...] = ()
    """For ``superseded``: the live memories about the same subject that the new one replaced."""
    similarity: float | None = None
    """For ``merged``: cosine similarity to the memory merged into."""
    redactions: dict[str, int] = field(default_factory=dict)
    """Findings replaced before storage, per kind (empty when redaction is off)."""


@dataclass(frozen=True)
class MemoryRecord:
    """One stored memory, live or superseded."""

    id: int
    agent_id: str
    kind: str
    subject: str | None
    content: str
    importance: float
    dim: int
    source_session_id: str | None
    superseded_by: int | None
    superseded_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    forgotten_at: datetime | None = None
    """When a person forgot it (it is kept, and never recalled again)."""
    forgotten_by: str | None = None
    forget_reason: str | None = None
    embedder: str = ""
    """Name of the embedder that produced its vector."""
    embedder_version: str = ""

    @property
    def superseded(self) -> bool:
        return self.superseded_by is not None

    @property
    def forgotten(self) -> bool:
        return self.forgotten_at is not None


@dataclass(frozen=True)
class Forgotten:
    """What ``MemoryStore.forget`` did."""

    record: MemoryRecord
    """The memory as it is now (forgotten)."""
    now: bool
    """Forgotten by this call; false when it had been forgotten before."""
    restored_ids: tuple[int, ...] = ()
    """The memories it had superseded that are current again."""


@dataclass(frozen=True)
class Recalled:
    """One recalled memory with its score and how each search ranked it."""

    id: int
    kind: str
    subject: str | None
    content: str
    importance: float
    created_at: datetime
    score: float
    """Fused relevance x recency factor x importance factor; higher is better."""
    superseded: bool
    vector_rank: int | None
    """1-based rank among the vector candidates, None when not among them."""
    text_rank: int | None
    """1-based rank among the full-text candidates, None when not among them."""
    similarity: float | None = None
    """Cosine similarity to the query, when the memory was a vector candidate."""


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_text(value: str, what: str) -> None:
    if textcodec.needs_escape(value):
        raise ValueError(
            f"memory {what} contains NUL or a lone surrogate, which PostgreSQL TEXT cannot "
            "hold; memory text is stored exactly as given, so clean it first"
        )


@functools.lru_cache(maxsize=8)
def _reals(dim: int) -> struct.Struct:
    return struct.Struct(f"{dim}f")


@functools.lru_cache(maxsize=8)
def _literal_format(dim: int) -> str:
    return "[" + ",".join(["%.9g"] * dim) + "]"


def _vector_literal(vector: list[float], dim: int) -> str:
    """A vector as a pgvector literal: each value rounded once to the column's ``real``
    and written with the 9 significant digits that name that real, so pgvector reads
    exactly it. 3.7 times faster than writing each double's shortest form (which
    pgvector then rounded to a real in turn, now and then to the other neighbour)."""
    if len(vector) != dim:
        raise ValueError(f"embedding has {len(vector)} dimensions, the embedder says {dim}")
    reals = _reals(dim)
    rounded = reals.unpack(reals.pack(*vector))
    # One pass on the way through: a value that is not finite stays so once rounded.
    if not all(map(math.isfinite, rounded)):
        if not all(map(math.isfinite, vector)):
            raise ValueError("embedding holds NaN or infinity")
        raise ValueError("embedding holds a value beyond the range of a real")
    return _literal_format(dim) % rounded


def _normal_subject(subject: str | None) -> str | None:
    if subject is None:
        return None
    subject = subject.strip()
    return subject or None


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value


_MEMORY_COLUMNS = (
    "id, agent_id, kind, subject, content, importance, dim, source_session_id, "
    "superseded_by, superseded_at, metadata, created_at, forgotten_at, forgotten_by, "
    "forget_reason, embedder, embedder_version"
)

# The live memories about the same subject, each with its similarity to the new one:
# they are few, so they are compared exactly. A row of another dimension (written before
# the embedder changed) counts as a duplicate only when its text is identical.
_SAME_SUBJECT_SQL = """
    SELECT id,
           CASE WHEN content = :content THEN 1.0
                WHEN dim = :dim AND embedder = :embedder AND embedder_version = :version
                THEN 1 - (embedding <=> CAST(:vector AS vector))
           END AS similarity
    FROM memories
    WHERE agent_id = :agent_id AND kind = :kind AND superseded_by IS NULL
      AND forgotten_at IS NULL AND subject_key = lower(:subject)
    ORDER BY id
    FOR UPDATE
    """

# Near-duplicates without a subject are found among the agent's subject-less memories
# through the vector index (``MemoryStore._vector_candidates``).
_NO_SUBJECT = "m.agent_id = :agent_id AND m.kind = :kind AND m.superseded_by IS NULL" + (
    " AND m.forgotten_at IS NULL AND m.subject IS NULL"
    " AND m.embedder = :embedder AND m.embedder_version = :version"
)
DEDUPE_CANDIDATES = 10

TEXT_SCAN_LIMIT = 2000
"""Default for ``MemoryStore.text_scan_limit``: matching rows ranked per ladder step."""
COMMON_WORD_ROWS = 1000
"""Default for ``MemoryStore.common_word_rows``: a word in more rows than this (in the
whole table, by PostgreSQL's statistics) is common, and the ladder's steps try the
combinations holding a rarer word first (``text_ladder``)."""
CONCURRENT_HALVES = 4
"""Hybrid recalls per store that may run their two halves at once (two connections each)."""

_FOR_MERGE = sql("SELECT importance, metadata FROM memories WHERE id = :id FOR UPDATE")

# A keyed write (a tool call's, a session outcome's) is recorded with its result, so a
# retry of the same call returns that result instead of writing again; the primary key
# (agent_id, write_key) makes the database hold to it. Recorded in the write's own
# statement, from the row it wrote (``m``), and only when there is a key.
_KEYED_WRITE = """
    written AS (
        INSERT INTO memory_writes (agent_id, write_key, session_id, memory_id, action,
                                   similarity, superseded_ids)
        SELECT :agent_id, CAST(:key AS text), :source_session_id, m.id, :action,
               CAST(:similarity AS double precision), :old_ids
        FROM m WHERE CAST(:key AS text) IS NOT NULL
    )"""

_MERGE = sql(
    f"""
    WITH m AS (
        UPDATE memories
        SET importance = GREATEST(importance, :importance), metadata = :metadata
        WHERE id = :id
        RETURNING id
    ), {_KEYED_WRITE}
    SELECT id FROM m
    """
).bindparams(bindparam("metadata", type_=JSONB), bindparam("old_ids", type_=ARRAY(BigInteger)))
"""A merge into memory ``id`` in one statement, with its keyed write's record."""

_INSERT = sql(
    f"""
    WITH m AS (
        INSERT INTO memories (agent_id, kind, subject, content, importance, dim, embedding,
                              source_session_id, metadata, created_at, embedder,
                              embedder_version)
        VALUES (:agent_id, :kind, :subject, :content, :importance, :dim,
                CAST(:vector AS vector), :source_session_id, :metadata,
                coalesce(CAST(:created_at AS timestamptz), now()), :embedder, :version)
        RETURNING id
    ), superseded AS (
        UPDATE memories SET superseded_by = (SELECT id FROM m), superseded_at = now()
        WHERE id = ANY(:old_ids)
    ), {_KEYED_WRITE}
    SELECT id FROM m
    """
).bindparams(bindparam("metadata", type_=JSONB), bindparam("old_ids", type_=ARRAY(BigInteger)))
"""A new memory in one statement: the memories it supersedes (``old_ids``, locked by
``_BEFORE_A_SUBJECT_WRITE``) marked, and its keyed write's record."""

_WRITTEN_SQL = """
    SELECT memory_id, action, similarity, superseded_ids FROM memory_writes
    WHERE agent_id = :agent_id AND write_key = CAST(:key AS text)
    """
_WRITTEN = sql(_WRITTEN_SQL)

_BEFORE_A_SUBJECT_WRITE = sql(
    f"""
    SELECT (SELECT row_to_json(w) FROM ({_WRITTEN_SQL}) w) AS written,
           (SELECT row_to_json(e) FROM ({ACTIVE_SHARED_SQL}) e) AS active,
           (SELECT coalesce(json_agg(json_build_array(s.id, s.similarity) ORDER BY s.id), '[]')
            FROM ({_SAME_SUBJECT_SQL}) s) AS same
    """
)
"""What a write with a subject reads first, in this order and one statement: its key's
earlier result (a concurrent run of the same call), the agent's active embedder
(share-locked, ``require_for_write``) and the live memories of the same subject and kind
with their similarity (locked for update: the ones it may merge into or supersede)."""

_GET = sql(f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE agent_id = :agent_id AND id = :id")

_FORGET = sql(
    """
    WITH forgotten AS (
        UPDATE memories SET forgotten_at = now(), forgotten_by = :by, forget_reason = :reason
        WHERE agent_id = :agent_id AND id = :id AND forgotten_at IS NULL
        RETURNING id, superseded_by
    ), restored AS (
        UPDATE memories m
        SET superseded_by = NULL, superseded_at = NULL,
            metadata = coalesce(m.metadata, '{}'::jsonb)
                       || jsonb_build_object('superseded_by_forgotten', f.id)
        FROM forgotten f
        WHERE f.superseded_by IS NULL AND m.agent_id = :agent_id AND m.superseded_by = f.id
          AND m.forgotten_at IS NULL
        RETURNING m.id
    )
    SELECT (SELECT count(*) FROM forgotten) AS forgotten,
           ARRAY(SELECT id FROM restored ORDER BY id) AS restored
    """
)
"""Forget a memory; when it was current, the memories it had superseded (and that are not
forgotten themselves) are current again, their metadata naming the forgotten one."""

_HISTORY = sql(
    f"""
    SELECT {_MEMORY_COLUMNS} FROM memories
    WHERE agent_id = :agent_id AND subject_key = lower(:subject)
      AND (CAST(:kind AS text) IS NULL OR kind = :kind)
    ORDER BY id
    """
)


def _record(row: Any) -> MemoryRecord:
    return MemoryRecord(
        id=row.id,
        agent_id=row.agent_id,
        kind=row.kind,
        subject=row.subject,
        content=row.content,
        importance=row.importance,
        dim=row.dim,
        source_session_id=row.source_session_id,
        superseded_by=row.superseded_by,
        superseded_at=row.superseded_at,
        metadata=textcodec.decode_json(row.metadata),
        created_at=row.created_at,
        forgotten_at=row.forgotten_at,
        forgotten_by=row.forgotten_by,
        forget_reason=row.forget_reason,
        embedder=row.embedder,
        embedder_version=row.embedder_version,
    )


async def _written(db: Statements, agent_id: str, key: str) -> AddResult | None:
    row = (await db.execute(_WRITTEN, {"agent_id": agent_id, "key": key})).one_or_none()
    if row is None:
        return None
    return _add_result(row._mapping)


def _add_result(row: Any) -> AddResult:
    """A keyed write's recorded result (a ``memory_writes`` row)."""
    return AddResult(
        id=row["memory_id"],
        action=row["action"],
        superseded_ids=tuple(row["superseded_ids"] or ()),
        similarity=row["similarity"],
    )


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


EF_SEARCH_MAX = 1000
"""pgvector's upper bound for hnsw.ef_search."""

_RECALLED_COLUMNS = ", m.kind, m.subject, m.content, m.importance, m.created_at, m.superseded_by"
"""What recall reads of each memory, with its id, in the search that finds it."""


def _with_kinds(statement: TextClause, kinds: list[str] | None) -> TextClause:
    if kinds:
        return statement.bindparams(bindparam("kinds", type_=ARRAY(String)))
    return statement


def _vector_sql(dim: int, filters: str, *, exact: bool, columns: str = "") -> str:
    # The dimension is written into the SQL as a literal: only then can the planner prove
    # ``dim = <n>`` and use the partial HNSW index built for that dimension. The exact
    # form orders by the bare column, which no index serves. Ties are broken by id in
    # Python: a second sort key here would put a sort above the index scan.
    d = int(dim)
    if exact:
        distance = "m.embedding <=> CAST(:vector AS vector)"
    else:
        distance = f"m.embedding::vector({d}) <=> CAST(:vector AS vector({d}))"
    return f"""
        SELECT m.id, {distance} AS distance{columns}
        FROM memories m
        WHERE m.dim = {d} AND {filters}
        ORDER BY {distance}
        LIMIT :n
    """


def _checked_vector_sql(dim: int, filters: str, columns: str) -> str:
    """Recall's index search with the agent's active embedder beside it, in one statement:
    one row with the embedder (``active_*``) and NULL hit columns when nothing is found."""
    return f"""
        SELECT a.embedder AS active_embedder, a.version AS active_version,
               a.dim AS active_dim, h.*
        FROM (SELECT 1) AS one
        {ACTIVE_FOR_RECALL}
        LEFT JOIN LATERAL ({_vector_sql(dim, filters, exact=False, columns=columns)}) AS h ON true
    """


def _count_sql(dim: int, filters: str) -> str:
    # Bounded: it stops at the number of candidates wanted.
    return f"""
        SELECT count(*) FROM (
            SELECT 1 FROM memories m WHERE m.dim = {int(dim)} AND {filters} LIMIT :n
        ) AS bounded
    """


_SEARCH_OPERATORS = re.compile(r'"|(?:^|\s)-\w|\bor\b', re.IGNORECASE)


def _has_search_operators(query: str) -> bool:
    """Whether the query uses web-search syntax: quotes, ``-word`` or ``or``."""
    return _SEARCH_OPERATORS.search(query) is not None


LADDER_TERMS = 8
"""A plain query's longest (most distinctive) words kept for the full-text ladder."""
LADDER_CLAUSES = 32
"""Ladder steps that would need more alternatives than this are skipped."""
EMPTY_STEP_ROWS = 0.1
"""Ladder steps expected to match fewer rows than this in the whole table are skipped."""
STATISTICS_TTL_SECONDS = 300.0
"""How long a store keeps the word statistics it read before reading them again."""
COUNT_TTL_SECONDS = 300.0
EF_SEARCH_BASE = 40
EF_SEARCH_BASE_ROWS = 5_000


def ef_search_for(rows: int, candidates: int) -> int:
    """``hnsw.ef_search`` for an agent with ``rows`` memories: ``40 * sqrt(rows / 5000)``,
    at least ``candidates`` (and 40), at most 1000.

    An HNSW search with a fixed ``ef_search`` finds a smaller share of the true nearest
    neighbours as the graph grows: on all-MiniLM-L6-v2 embeddings of real sentences,
    ef 40 gave recall@10 0.94 at 100k rows, ef 160 0.98. The square root keeps recall@10
    near 0.98 from 5k to 1M rows (ef 40 at 5k, 179 at 100k, 566 at 1M) for a latency
    that grows far slower than the table (``bench/memory_real_text.py`` prints both).
    ``MemoryStore(ef_search=...)`` (setting ``memory_ef_search``) fixes it instead.
    """
    scaled = math.ceil(EF_SEARCH_BASE * math.sqrt(max(rows, 0) / EF_SEARCH_BASE_ROWS))
    return min(EF_SEARCH_MAX, max(EF_SEARCH_BASE, candidates, scaled))


def _tsquery_term(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True)
class TextStatistics:
    """What PostgreSQL's statistics say about the words of ``memories.tsv``: the share of
    rows holding each of its most common lexemes (``pg_stats.most_common_elems``), a
    share no other lexeme reaches (the smallest one listed), and the table's row count."""

    shares: dict[str, float]
    floor: float
    rows: float

    def share(self, lexeme: str) -> float:
        return self.shares.get(lexeme, self.floor)

    def expected(self, lexemes: Sequence[str], at_least: int) -> float:
        """Rows expected to hold at least ``at_least`` of ``lexemes``, were words
        independent of each other."""
        # Probability of holding exactly j of the words so far, word by word.
        exactly = [1.0] + [0.0] * len(lexemes)
        for lexeme in lexemes:
            p = min(1.0, self.share(lexeme))
            for j in range(len(lexemes), 0, -1):
                exactly[j] = exactly[j] * (1.0 - p) + exactly[j - 1] * p
            exactly[0] *= 1.0 - p
        return self.rows * sum(exactly[at_least:])


def _ladder_words(lexemes: list[str]) -> list[str]:
    return sorted(set(lexemes), key=lambda w: (-len(w), w))[:LADDER_TERMS]


def text_ladder(
    lexemes: list[str],
    statistics: TextStatistics | None = None,
    common_rows: float = COMMON_WORD_ROWS,
    *,
    counts: Counter[str] | None = None,
) -> list[str]:
    """The steps of a plain query's full-text search, as tsquery texts: memories holding
    all ``lexemes``, then all but one, ..., then any two, then any one.

    Only the ``LADDER_TERMS`` longest lexemes take part (longer words are rarer, so they
    say more); a step needing more than ``LADDER_CLAUSES`` alternatives is skipped (the
    next one finds its rows too). The plain OR of every kept word is what candidates are
    ranked against (``text_ranking``).

    With ``statistics`` (each step walks the index entries of its words whether it finds
    anything or not, so the statistics steer which steps run):

    - a step of three words or more that no row is expected to match (fewer than
      ``EMPTY_STEP_ROWS`` in the whole table, were the words independent) is skipped:
      on real text most queries' upper steps find nothing. The any-two and any-one
      steps always run, so a row holding more words than expected (an agent's memories
      share topics) is still found, by the any-two step, where it ranks above rows
      holding two;
    - a step is split in two when some of its words are common (in more than
      ``common_rows`` rows, ``COMMON_WORD_ROWS`` by default): first the
      combinations holding a word that is not common, then those of common words only,
      which run only if the first part found too few. Rows sharing a rarer word with
      the query come first, as inverse document frequency would rank them, and the
      first part walks only the shorter entry lists (the index skips through the
      common words' lists).

    ``counts`` gains one ``predicted_empty`` per step the statistics left out and one
    ``split`` per step run in two parts.
    """
    words = _ladder_words(lexemes)
    common: set[str] = set()
    if statistics is not None:
        common = {w for w in words if statistics.share(w) * statistics.rows > common_rows}
    steps: list[str] = []
    for size in range(len(words), 0, -1):
        if size > 1 and math.comb(len(words), size) > LADDER_CLAUSES:
            continue
        if (
            size > 2
            and statistics is not None
            and statistics.expected(words, size) < EMPTY_STEP_ROWS
        ):
            if counts is not None:
                counts["predicted_empty"] += 1
            continue
        groups = list(itertools.combinations(words, size))
        rarer = [g for g in groups if not common.issuperset(g)]
        commoner = [g for g in groups if common.issuperset(g)]
        parts = [part for part in (rarer, commoner) if part]
        if counts is not None and len(parts) == 2:
            counts["split"] += 1
        for part in parts:
            clauses = [" & ".join(_tsquery_term(w) for w in group) for group in part]
            if size == 1:
                steps.append(" | ".join(clauses))
            else:
                steps.append(" | ".join(f"({clause})" for clause in clauses))
    return steps


def text_ranking(lexemes: list[str]) -> str:
    """The tsquery a plain query's candidates are ranked against: the OR of the words
    ``text_ladder`` keeps."""
    return " | ".join(_tsquery_term(w) for w in _ladder_words(lexemes))


_WORD_STATISTICS = sql(
    """
    SELECT CAST(CAST(s.most_common_elems AS text) AS text[]) AS lexemes,
           s.most_common_elem_freqs AS shares, c.reltuples AS rows
    FROM pg_stats s
    JOIN pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
    WHERE s.schemaname = current_schema() AND s.tablename = 'memories' AND s.attname = 'tsv'
    """
)
_LEXEMES = sql("SELECT tsvector_to_array(to_tsvector('english', :text))")
_WEBSEARCH = sql("SELECT CAST(websearch_to_tsquery('english', :text) AS text)")

_TEXT_SEARCH_ROWS = sql(
    f"""
    SELECT s.id, s.rank_cd, s.level, {_RECALLED_COLUMNS.lstrip(", ")}
    FROM vigil_memory_text_search(
        CAST(:levels AS tsquery[]), CAST(:ranking AS tsquery), :kinds, :since, :until,
        :live_only, :n, :cap) WITH ORDINALITY AS s(id, rank_cd, level, found)
    JOIN memories m ON m.id = s.id AND m.agent_id = :agent_id
    ORDER BY s.found
    """
).bindparams(
    # Typed once here: a statement built per call is compiled per call.
    bindparam("levels", type_=ARRAY(String)),
    bindparam("kinds", type_=ARRAY(String)),
    bindparam("since", type_=DateTime(timezone=True)),
    bindparam("until", type_=DateTime(timezone=True)),
)


_LIVE_IDS = sql(
    """
    SELECT id FROM memories WHERE agent_id = :agent_id AND id = ANY(:ids)
    AND forgotten_at IS NULL AND superseded_by IS NULL
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)))


_LIVE_BOUNDED = sql(
    "SELECT live, blocked FROM vigil_live_memories(CAST(:ids AS bigint[]), "
    "CAST(:lock_ms AS integer))"
)


async def live_memories_bounded(
    db: Statements, ids: list[int], lock_ms: int | None
) -> set[int] | None:
    """Which of ``ids`` are live memories of the agent ``db`` acts for, waiting on a lock
    (DDL, ``LOCK TABLE``) at most ``lock_ms`` (``vigil_live_memories``, migration
    20261202_18: PostgreSQL bounds the wait, nothing is cancelled from the client); None
    when that bound was passed."""
    row = (await db.execute(_LIVE_BOUNDED, {"ids": ids, "lock_ms": lock_ms})).mappings().one()
    return None if row["blocked"] else set(row["live"])


_AGENT_COUNT = sql("SELECT count(*) FROM memories WHERE agent_id = :agent_id AND dim = :dim")
