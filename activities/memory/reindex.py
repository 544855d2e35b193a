"""Re-embed an agent's memories with another embedder, online and resumable.

``reindex`` writes the new vectors beside the live ones (``memory_vectors``), a batch per
transaction, while recall keeps comparing with the old ones (the agent's active embedder
does not change). Once every memory has its new vector, one transaction copies them into
``memories`` and makes the new embedder the agent's active one, so recall moves from the
old vector space to the new one at a single commit, never seeing a mix.

Resumable: the new vectors written so far are the progress. A reindex that died (a crash,
a killed process, an embedder that failed) is continued by running it again: it embeds
only the memories that have no new vector yet, and a vector written twice is written
once (primary key, ``ON CONFLICT DO NOTHING``). A memory remembered while the reindex
runs is picked up by a later batch or, at the latest, inside the switch transaction,
which holds the agent's active row so no write can slip in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import BigInteger, Text, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.provenance import EmbedderIdentity, active_embedder, identity_of
from vigil.activities.record.rls import acting_for

DEFAULT_BATCH = 64
ReindexState = Literal["building", "active"]


@dataclass(frozen=True)
class ReindexProgress:
    """Where a reindex of one agent's memories stands."""

    agent_id: str
    target: EmbedderIdentity
    previous: EmbedderIdentity | None
    """The agent's active embedder when the reindex started (None: it had none)."""
    total: int
    """Memories to re-embed (not yet on the target embedder) when this run started."""
    done: int
    """Of those, how many have their new vector."""
    resumed: int
    """How many of ``done`` an earlier, interrupted run had already written."""
    state: ReindexState
    """``building`` until the switch, then ``active``."""

    @property
    def switched(self) -> bool:
        return self.state == "active"


_PENDING = """
    FROM memories m
    WHERE m.agent_id = :agent_id
      AND (m.embedder, m.embedder_version, m.dim) <> (:embedder, :version, :dim)
"""

_COUNT_PENDING = text(f"SELECT count(*) {_PENDING}")

_COUNT_WRITTEN = text(
    f"""
    SELECT count(*) {_PENDING}
      AND EXISTS (SELECT 1 FROM memory_vectors v WHERE v.memory_id = m.id
                  AND v.embedder = :embedder AND v.version = :version)
    """
)

_NEXT_BATCH = text(
    f"""
    SELECT m.id, m.content {_PENDING}
      AND NOT EXISTS (SELECT 1 FROM memory_vectors v WHERE v.memory_id = m.id
                      AND v.embedder = :embedder AND v.version = :version)
    ORDER BY m.id
    LIMIT :n
    """
)

_START = text(
    """
    INSERT INTO memory_embedders (agent_id, embedder, version, dim, state, total, done)
    VALUES (:agent_id, :embedder, :version, :dim, 'building', :total, :done)
    ON CONFLICT (agent_id, embedder, version) DO UPDATE
    SET state = CASE WHEN memory_embedders.state = 'active' THEN 'active' ELSE 'building' END,
        started_at = CASE WHEN memory_embedders.state = 'retired' THEN now()
                          ELSE memory_embedders.started_at END,
        dim = EXCLUDED.dim, total = EXCLUDED.total, done = EXCLUDED.done, updated_at = now()
    """
)

_WRITE = text(
    """
    INSERT INTO memory_vectors (memory_id, agent_id, embedder, version, dim, embedding)
    SELECT w.id, :agent_id, :embedder, :version, :dim, CAST(w.vector AS vector)
    FROM unnest(:ids, :vectors) AS w(id, vector)
    ON CONFLICT DO NOTHING
    RETURNING memory_id
    """
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)), bindparam("vectors", type_=ARRAY(Text)))

_ADVANCE = text(
    """
    UPDATE memory_embedders SET done = done + :n, updated_at = now()
    WHERE agent_id = :agent_id AND embedder = :embedder AND version = :version
    """
)

_LOCK_ACTIVE = text(
    "SELECT 1 FROM memory_embedders WHERE agent_id = :agent_id AND state = 'active' FOR UPDATE"
)

_SWAP = text(
    """
    UPDATE memories m
    SET embedding = v.embedding, dim = v.dim, embedder = v.embedder,
        embedder_version = v.version,
        metadata = jsonb_set(m.metadata, '{embedder}', to_jsonb(v.embedder))
    FROM memory_vectors v
    WHERE v.memory_id = m.id AND v.embedder = :embedder AND v.version = :version
      AND m.agent_id = :agent_id
      AND (m.embedder, m.embedder_version, m.dim) <> (:embedder, :version, :dim)
    """
)

_RETIRE = text(
    """
    UPDATE memory_embedders SET state = 'retired', updated_at = now()
    WHERE agent_id = :agent_id AND state = 'active'
      AND (embedder, version) <> (:embedder, :version)
    """
)

_ACTIVATE = text(
    """
    UPDATE memory_embedders
    SET state = 'active', activated_at = now(), updated_at = now(), done = total
    WHERE agent_id = :agent_id AND embedder = :embedder AND version = :version
    """
)

# System work after the switch: the agent role may not delete.
_DISCARD = text(
    """
    DELETE FROM memory_vectors
    WHERE agent_id = :agent_id AND embedder = :embedder AND version = :version
    """
)


def _literal(vector: list[float], dim: int) -> str:
    if len(vector) != dim or not all(math.isfinite(v) for v in vector):
        raise ValueError(f"the embedder returned a vector that is not {dim} finite floats")
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


class Reindexer:
    """Re-embeds one agent's memories with ``embedder`` (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        embedder: Embedder,
        *,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._sessionmaker = sessionmaker
        self.embedder = embedder
        self.target = identity_of(embedder)
        self.batch_size = batch_size

    def _params(self, agent_id: str) -> dict[str, Any]:
        return {
            "agent_id": agent_id,
            "embedder": self.target.name,
            "version": self.target.version,
            "dim": self.target.dim,
        }

    async def run(
        self, agent_id: str, on_progress: Callable[[ReindexProgress], None] | None = None
    ) -> ReindexProgress:
        """Embed what is missing, then switch the agent to the new embedder.

        ``on_progress`` is called once at the start, after every batch and after the
        switch. Running it again after an interruption continues where it stopped;
        running it for the embedder already active (and complete) changes nothing.
        """
        params = self._params(agent_id)
        async with acting_for(self._sessionmaker, agent_id) as db:
            previous = await active_embedder(db, agent_id)
            total = int((await db.execute(_COUNT_PENDING, params)).scalar_one())
            done = int((await db.execute(_COUNT_WRITTEN, params)).scalar_one())
            if total == 0 and previous is not None and previous.same_space(self.target):
                progress = ReindexProgress(agent_id, self.target, previous, 0, 0, 0, "active")
                if on_progress is not None:
                    on_progress(progress)
                return progress
            await db.execute(_START, {**params, "total": total, "done": done})
        progress = ReindexProgress(agent_id, self.target, previous, total, done, done, "building")
        if on_progress is not None:
            on_progress(progress)

        while True:
            async with acting_for(self._sessionmaker, agent_id) as db:
                written = await self._embed_batch(db, params)
            if written is None:
                break
            progress = ReindexProgress(
                agent_id, self.target, previous, total, min(total, progress.done + written),
                progress.resumed, "building",
            )  # fmt: skip
            if on_progress is not None:
                on_progress(progress)

        await self._switch(agent_id, params)
        progress = ReindexProgress(
            agent_id, self.target, previous, total, total, progress.resumed, "active"
        )
        if on_progress is not None:
            on_progress(progress)
        return progress

    async def _embed_batch(self, db: DbSession, params: dict[str, Any]) -> int | None:
        """Embed the next batch of memories without a new vector; None when none is left.

        The texts are read in one short transaction and the vectors written in the same
        one after embedding (the embedder may be a model or an HTTP call): it holds no
        lock meanwhile, so recall and remember go on.
        """
        rows = list(await db.execute(_NEXT_BATCH, {**params, "n": self.batch_size}))
        if not rows:
            return None
        vectors = await self.embedder.embed([row.content for row in rows])
        if len(vectors) != len(rows):
            raise ValueError(f"the embedder returned {len(vectors)} vectors for {len(rows)} texts")
        result = await db.execute(
            _WRITE,
            {
                **params,
                "ids": [row.id for row in rows],
                "vectors": [_literal(v, self.target.dim) for v in vectors],
            },
        )
        written = len(list(result))
        await db.execute(_ADVANCE, {**params, "n": written})
        return written

    async def _switch(self, agent_id: str, params: dict[str, Any]) -> None:
        async with self._sessionmaker() as db, db.begin():
            async with acting_for(db, agent_id):
                # Remember() share-locks this row before it inserts: from here no memory
                # of the old embedder can be added until the switch commits.
                await db.execute(_LOCK_ACTIVE, params)
                while await self._embed_batch(db, params) is not None:
                    pass  # memories remembered since the last batch
                await db.execute(_SWAP, params)
                left = int((await db.execute(_COUNT_PENDING, params)).scalar_one())
                if left:
                    raise RuntimeError(f"{left} memories of {agent_id!r} have no new vector")
                await db.execute(_RETIRE, params)
                await db.execute(_ACTIVATE, params)
            await db.execute(_DISCARD, params)
