"""The statements of the memory store's writes and of its reads by id and subject. A
write with a subject reads, in one statement, its key's earlier result, the agent's
active embedder and the live memories of that subject (``_BEFORE_A_SUBJECT_WRITE``); a
merge and an insert (with the supersede it implies) are one statement each, recording a
keyed write's result in ``memory_writes`` so a retried call gets it back instead of
writing again. ``MemoryStore`` (``activities.memory.store``) runs them, as it runs the
statements of ``forget``, ``get`` and ``history`` kept here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, bindparam
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from vigil.activities.failures import causes
from vigil.activities.memory.provenance import ACTIVE_SHARED_SQL
from vigil.activities.memory.records import AddResult, _add_result
from vigil.activities.record.lean import Statements, memory_lock, xact_lock
from vigil.activities.record.sql import sql

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
      AND forgotten_at IS NULL AND subject_key = :subject_key
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

_KEYED_WRITE_SESSION = "memory_writes_session_id_fkey"
"""The keyed write's reference to its session: broken when the session was erased
between the session's end and its outcome's write."""


def session_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a keyed write refused because its session's
    record no longer exists (erased meanwhile: nothing of it is to be kept)."""
    return any(
        getattr(link, "constraint_name", None) == _KEYED_WRITE_SESSION for link in causes(exc)
    )


_FOR_MERGE = sql("SELECT importance, metadata, content FROM memories WHERE id = :id FOR UPDATE")

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
        INSERT INTO memories (agent_id, kind, subject, subject_key, content, importance, dim,
                              embedding, source_session_id, metadata, created_at, embedder,
                              embedder_version)
        VALUES (:agent_id, :kind, :subject, :subject_key, :content, :importance, :dim,
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
    WITH RECURSIVE forgotten AS (
        UPDATE memories SET forgotten_at = now(), forgotten_by = :by, forget_reason = :reason
        WHERE agent_id = :agent_id AND id = :id AND forgotten_at IS NULL
        RETURNING id, superseded_by
    ), behind AS (
        SELECT m.id, m.forgotten_at IS NOT NULL AS gone
        FROM memories m JOIN forgotten f ON m.superseded_by = f.id
        WHERE f.superseded_by IS NULL AND m.agent_id = :agent_id
        UNION
        SELECT m.id, m.forgotten_at IS NOT NULL
        FROM memories m JOIN behind b ON m.superseded_by = b.id
        WHERE b.gone AND m.agent_id = :agent_id
    ), restored AS (
        UPDATE memories m
        SET superseded_by = NULL, superseded_at = NULL,
            metadata = coalesce(m.metadata, '{}'::jsonb)
                       || jsonb_build_object('superseded_by_forgotten', f.id)
        FROM forgotten f
        WHERE m.agent_id = :agent_id AND m.id IN (SELECT id FROM behind WHERE NOT gone)
        RETURNING m.id
    )
    SELECT (SELECT count(*) FROM forgotten) AS forgotten,
           ARRAY(SELECT id FROM restored ORDER BY id) AS restored
    """
)
"""Forget a memory; when it was current, the memories it had superseded are current again
(their metadata naming the forgotten one), and where one of those was forgotten already,
the ones that one had superseded, and so on: the newest memories of the chain no one
forgot, whatever order the others were forgotten in."""


def lock_kind(agent_id: str, kind: str) -> Any:
    """The statement that takes the lock a write of ``agent_id``'s memories of ``kind``
    holds (``memory_lock``), for a forget's transaction."""
    return sql(f"SELECT {xact_lock(memory_lock(agent_id, kind))}")


_HISTORY = sql(
    f"""
    SELECT {_MEMORY_COLUMNS} FROM memories
    WHERE agent_id = :agent_id AND subject_key = :subject_key
      AND (CAST(:kind AS text) IS NULL OR kind = :kind)
      AND (CAST(:before AS bigint) IS NULL OR id < :before)
      AND (CAST(:forgotten AS boolean) OR forgotten_at IS NULL)
    ORDER BY id DESC
    LIMIT :n
    """
)
"""The newest ``n`` versions of a subject before ``before`` (all when None), newest first;
forgotten ones only with ``forgotten``."""


async def _written(db: Statements, agent_id: str, key: str) -> AddResult | None:
    row = (await db.execute(_WRITTEN, {"agent_id": agent_id, "key": key})).one_or_none()
    if row is None:
        return None
    return _add_result(row._mapping)
