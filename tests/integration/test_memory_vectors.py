"""What pgvector keeps of a memory's embedding: each value rounded once to a ``real``,
exactly, whatever the embedder's doubles look like; a value no ``real`` can hold is
refused before anything is written."""

from __future__ import annotations

import random
import struct
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore

pytestmark = pytest.mark.integration

DIM = 16


class FixedEmbedder(HashingEmbedder):
    """Embeds every text as the vector it was given."""

    def __init__(self, vector: list[float]) -> None:
        super().__init__(DIM)
        self.vector = vector

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [list(self.vector) for _ in texts]


def as_reals(vector: list[float]) -> list[float]:
    packed = struct.Struct(f"{len(vector)}f")
    return list(packed.unpack(packed.pack(*vector)))


async def stored(sessionmaker: async_sessionmaker[DbSession], memory_id: int) -> list[float]:
    async with sessionmaker() as db:
        literal = (
            await db.execute(
                text("SELECT embedding::text FROM memories WHERE id = :id"), {"id": memory_id}
            )
        ).scalar_one()
    return as_reals([float(v) for v in literal.strip("[]").split(",")])


async def test_each_value_is_kept_as_the_nearest_real(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    rng = random.Random(7)
    edges = [
        0.1,
        -0.0,
        1 / 3,
        1.0000000596046448,  # halfway between the reals 1 and 1 + 2**-23
        3.4028234663852886e38,  # the largest real
        1.401298464324817e-45,  # the smallest subnormal real
        -2.5e-40,
        123456789.123,
    ]
    vector = edges + [rng.gauss(0, 0.05) for _ in range(DIM - len(edges))]
    store = MemoryStore(sessionmaker, FixedEmbedder(vector))
    added = await store.add(f"agent-{uuid.uuid4()}", "a note with awkward numbers")
    assert await stored(sessionmaker, added.id) == as_reals(vector)


async def test_a_value_beyond_a_real_is_refused_and_nothing_is_written(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    store = MemoryStore(sessionmaker, FixedEmbedder([0.5] * (DIM - 1) + [1e39]))
    with pytest.raises(ValueError, match="beyond the range of a real"):
        await store.add(agent, "too large")
    async with sessionmaker() as db:
        count = (
            await db.execute(
                text("SELECT count(*) FROM memories WHERE agent_id = :a"), {"a": agent}
            )
        ).scalar_one()
    assert count == 0
