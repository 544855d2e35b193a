"""Hybrid recall: full text rescues keyword matches, filters hold, recency and importance
weigh in, and one agent never recalls another's memories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore, Recalled, RecallMode
from vigil.workers.db import make_sessionmaker
from vigil.workers.settings import sqlalchemy_url

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(sessionmaker: async_sessionmaker[DbSession]) -> MemoryStore:
    return MemoryStore(sessionmaker, HashingEmbedder(384))


@pytest.fixture
def agent() -> str:
    return f"agent-{uuid.uuid4()}"


async def test_hybrid_finds_a_keyword_match_that_vector_search_misses(
    store: MemoryStore, agent: str
) -> None:
    # Short notes about neighbouring ticket ids look closer to the query "ZQX9" (shared
    # character trigrams) than a long note that names the ticket once among many words,
    # but only that note holds the word itself.
    for n in range(60):
        ticket = f"ZQX9{chr(65 + n % 26)}{n}"
        await store.add(agent, f"{ticket} closed", subject=ticket)
    target = await store.add(
        agent,
        "Incident review: the outage traced to ZQX9 was a misconfigured load balancer "
        "health check after the certificate renewal; the fix pinned the TLS version and "
        "restarted every proxy in both regions.",
    )
    vector_only = await store.recall(agent, "ZQX9", k=5, mode="vector", now=NOW)
    hybrid = await store.recall(agent, "ZQX9", k=5, now=NOW)
    assert target.id not in [h.id for h in vector_only]
    found = [h for h in hybrid if h.id == target.id]
    assert found and found[0].text_rank == 1


async def test_plain_queries_match_any_word_and_search_syntax_is_kept(
    sessionmaker: async_sessionmaker[DbSession], store: MemoryStore, agent: str
) -> None:
    berlin = await store.add(agent, "The offsite is in Berlin", subject="offsite")
    flights = await store.add(agent, "Flights are booked through the travel desk")
    both = await store.add(agent, "Flights to Berlin leave from gate 12", subject="gate")

    def ids(hits: list[Recalled]) -> set[int]:
        return {h.id for h in hits}

    assert ids(await store.recall(agent, "Berlin flights", mode="text")) == {
        berlin.id, flights.id, both.id,
    }  # fmt: skip
    strict = MemoryStore(sessionmaker, HashingEmbedder(384), text_match="all")
    assert ids(await strict.recall(agent, "Berlin flights", mode="text")) == {both.id}
    # Web-search syntax keeps its meaning: exclusion, quoted phrases.
    assert ids(await store.recall(agent, "Berlin -flights", mode="text")) == {berlin.id}
    assert ids(await store.recall(agent, '"travel desk"', mode="text")) == {flights.id}


async def test_text_recall_folds_case_and_width_beyond_ascii(
    store: MemoryStore, agent: str
) -> None:
    # The database may fold only ASCII letters (the C locale): words are folded to one
    # case and one spelling (NFKC) on both sides, whatever its locale.
    munich = await store.add(agent, "Das Büro zieht nach MÜNCHEN, Straße 12", subject="Büro")
    friday = "\uff26\uff52\uff49\uff44\uff41\uff59"  # full-width
    width = await store.add(agent, f"The \uff21\uff30\uff29 quota is raised on {friday}")
    await store.add(agent, "The office stays in Berlin")

    def ids(hits: list[Recalled]) -> set[int]:
        return {h.id for h in hits}

    assert ids(await store.recall(agent, "münchen", mode="text")) == {munich.id}
    assert ids(await store.recall(agent, "BÜRO", mode="text")) == {munich.id}
    assert ids(await store.recall(agent, "api friday", mode="text")) == {width.id}
    assert ids(await store.recall(agent, '"\uff21\uff30\uff29 quota"', mode="text")) == {width.id}


async def test_filters_by_kind_and_time_window(store: MemoryStore, agent: str) -> None:
    ids = {}
    for days, kind in [(40, "fact"), (20, "lesson"), (10, "fact"), (2, "lesson")]:
        added = await store.add(
            agent, f"Backups of the billing database, note from day {days}", kind=kind,
            subject=f"note-{days}", created_at=NOW - timedelta(days=days),
        )  # fmt: skip
        ids[days] = added.id
    query = "billing database backups"
    lessons = await store.recall(agent, query, kinds=["lesson"], now=NOW)
    assert {h.id for h in lessons} == {ids[20], ids[2]}
    assert {h.kind for h in lessons} == {"lesson"}
    window = await store.recall(
        agent, query, since=NOW - timedelta(days=20), until=NOW - timedelta(days=2), now=NOW
    )
    assert {h.id for h in window} == {ids[20], ids[10]}  # since inclusive, until exclusive
    both = await store.recall(agent, query, kinds=["fact"], since=NOW - timedelta(days=30), now=NOW)
    assert [h.id for h in both] == [ids[10]]


async def test_recency_lifts_a_newer_memory_above_an_older_equal_one(
    sessionmaker: async_sessionmaker[DbSession], store: MemoryStore, agent: str
) -> None:
    content = "The on-call rotation swaps every Wednesday at noon"
    # Identical text under two subjects: the older one wins every tie on rank (lower id).
    old = await store.add(agent, content, subject="a", created_at=NOW - timedelta(days=120))
    new = await store.add(agent, content, subject="b", created_at=NOW - timedelta(hours=1))
    hits = await store.recall(agent, "on-call rotation", k=2, now=NOW)
    assert [h.id for h in hits] == [new.id, old.id]
    assert hits[0].score > hits[1].score
    timeless = MemoryStore(sessionmaker, HashingEmbedder(384), recency_weight=0.0)
    assert [h.id for h in await timeless.recall(agent, "on-call rotation", k=2, now=NOW)] == [
        old.id,
        new.id,
    ]


async def test_importance_lifts_a_memory_above_an_equal_one(
    sessionmaker: async_sessionmaker[DbSession], store: MemoryStore, agent: str
) -> None:
    content = "Customer Acme wants invoices in euros"
    minor = await store.add(agent, content, subject="a", importance=0.1, created_at=NOW)
    major = await store.add(agent, content, subject="b", importance=0.9, created_at=NOW)
    hits = await store.recall(agent, "Acme invoices", k=2, now=NOW)
    assert [h.id for h in hits] == [major.id, minor.id]
    flat = MemoryStore(sessionmaker, HashingEmbedder(384), importance_weight=0.0)
    assert [h.id for h in await flat.recall(agent, "Acme invoices", k=2, now=NOW)] == [
        minor.id,
        major.id,
    ]


async def test_an_agent_never_recalls_another_agents_memories(store: MemoryStore) -> None:
    alice, bob = f"agent-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    mine = await store.add(alice, "The vault password rotates on the first of the month")
    theirs = await store.add(bob, "The vault password rotates on the first of the month")
    assert mine.id != theirs.id  # the same words, but not a duplicate across agents
    modes: tuple[RecallMode, ...] = ("hybrid", "vector", "text")
    for mode in modes:
        hits = await store.recall(bob, "vault password rotation", mode=mode, k=10)
        assert [h.id for h in hits] == [theirs.id]
    assert await store.get(bob, mine.id) is None
    [vector] = await store.embedder.embed(["vault password"])
    assert [i for i, _ in await store.nearest(bob, vector, k=10, exact=True)] == [theirs.id]
    assert [m.id for m in await store.history(alice, "vault")] == []


@pytest.fixture
async def index_first_store(database_url: str) -> AsyncIterator[MemoryStore]:
    """A store whose connections plan like a big table: through the HNSW index."""
    # A test table is small, so the planner scans an agent's rows exactly; on a large one
    # it takes the HNSW index, whose ef_search window other agents' rows can fill.
    engine = create_async_engine(
        sqlalchemy_url(database_url),
        connect_args={"server_settings": {"enable_sort": "off", "enable_seqscan": "off"}},
    )
    yield MemoryStore(make_sessionmaker(engine), HashingEmbedder(384))
    await engine.dispose()


async def test_a_small_agent_gets_its_neighbours_from_a_crowded_index(
    index_first_store: MemoryStore, agent: str
) -> None:
    store = index_first_store
    crowd = f"agent-{uuid.uuid4()}"
    for n in range(150):
        await store.add(
            crowd, f"rollout of service {n} paused for the canary check", subject=f"svc-{n}"
        )
    mine = [
        (await store.add(agent, text)).id
        for text in ["canary rollout paused", "service canary check failed", "rollout notes"]
    ]
    query = "rollout of service paused for the canary check"
    [vector] = await store.embedder.embed([query])
    # The HNSW index alone misses them: the crowd is nearer and fills its window.
    assert len(await store.nearest(agent, vector, k=3)) < len(mine)

    recalled = await store.recall(agent, query, k=3, mode="vector")
    assert sorted(h.id for h in recalled) == sorted(mine)
    assert store.vector_searches["index"] == 0
    assert store.vector_searches["widened"] + store.vector_searches["exact"] == 1

    lessons = await store.recall(crowd, query, k=3, kinds=["lesson"], mode="vector")
    assert lessons == []
    assert store.vector_searches["complete"] == 1


async def test_recall_refuses_bad_arguments(store: MemoryStore, agent: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        await store.recall(agent, "  \x00 ")
    with pytest.raises(ValueError, match="k must"):
        await store.recall(agent, "x", k=0)
    with pytest.raises(ValueError, match="timezone"):
        await store.recall(agent, "x", since=datetime(2026, 1, 1))
