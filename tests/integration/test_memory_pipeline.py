"""The memory write pipeline: insert, near-duplicate merge, supersede, redaction, locking."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.round_trips import counting
from vigil.activities.memory.embedders import EmbeddingError, HashingEmbedder, OpenAIEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.workers.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration


@pytest.fixture
def store(sessionmaker: async_sessionmaker[DbSession]) -> MemoryStore:
    return MemoryStore(sessionmaker, HashingEmbedder(384))


@pytest.fixture
def agent() -> str:
    return f"agent-{uuid.uuid4()}"


async def test_a_new_memory_is_inserted_with_its_vector(store: MemoryStore, agent: str) -> None:
    result = await store.add(
        agent, "The staging cluster runs PostgreSQL 16", kind="fact", importance=0.7,
        source_session_id="s-1", metadata={"from": "test"},
    )  # fmt: skip
    assert result.action == "inserted"
    record = await store.get(agent, result.id)
    assert record is not None
    assert (record.kind, record.content, record.importance, record.dim) == (
        "fact", "The staging cluster runs PostgreSQL 16", 0.7, 384,
    )  # fmt: skip
    assert record.source_session_id == "s-1"
    assert record.metadata == {"from": "test", "embedder": "hashing-384"}
    assert not record.superseded
    # The stored vector is the embedder's: its exact distance to that vector is zero.
    [vector] = await store.embedder.embed([record.content])
    nearest = await store.nearest(agent, vector, k=1, exact=True)
    assert nearest[0][0] == result.id
    assert nearest[0][1] == pytest.approx(0.0, abs=1e-6)


async def test_a_near_duplicate_merges_into_the_existing_memory(
    store: MemoryStore, agent: str
) -> None:
    first = await store.add(agent, "User prefers dark mode in the editor", importance=0.4)
    second = await store.add(agent, "user prefers DARK mode in the editor!", importance=0.8)
    third = await store.add(agent, "User prefers dark mode in the editor.", importance=0.2)
    assert (second.action, second.id) == ("merged", first.id)
    assert (third.action, third.id) == ("merged", first.id)
    assert second.similarity is not None and second.similarity >= store.merge_threshold

    record = await store.get(agent, first.id)
    assert record is not None
    assert record.importance == 0.8  # the larger of the merged importances
    assert record.content == "User prefers dark mode in the editor"
    assert record.metadata["merge_count"] == 2
    assert [m["content"] for m in record.metadata["merges"]] == [
        "user prefers DARK mode in the editor!",
        "User prefers dark mode in the editor.",
    ]
    hits = await store.recall(agent, "dark mode editor", k=10)
    assert [h.id for h in hits] == [first.id]


async def test_related_but_different_memories_are_not_merged(
    store: MemoryStore, agent: str
) -> None:
    dark = await store.add(agent, "User prefers dark mode in the editor")
    light = await store.add(agent, "User prefers light mode in the terminal")
    lesson = await store.add(agent, "User prefers dark mode in the editor", kind="lesson")
    assert light.action == "inserted" and light.id != dark.id
    # The same words as another kind of memory are a different memory.
    assert lesson.action == "inserted" and lesson.id != dark.id


async def test_a_new_fact_about_a_subject_supersedes_the_old_one(
    store: MemoryStore, agent: str
) -> None:
    paris = await store.add(agent, "Alice lives in Paris", subject="alice.city")
    berlin = await store.add(agent, "Alice moved to Berlin in May", subject="Alice.City ")
    assert berlin.action == "superseded"
    assert berlin.superseded_ids == (paris.id,)

    old = await store.get(agent, paris.id)
    assert old is not None and old.content == "Alice lives in Paris"
    assert old.superseded_by == berlin.id and old.superseded_at is not None

    live = await store.recall(agent, "where does Alice live", k=10)
    assert [h.id for h in live] == [berlin.id]
    everything = await store.recall(agent, "where does Alice live", k=10, include_superseded=True)
    assert {h.id: h.superseded for h in everything} == {paris.id: True, berlin.id: False}

    rome = await store.add(agent, "Alice relocated to Rome", subject="alice.city")
    assert rome.superseded_ids == (berlin.id,)
    chain = await store.history(agent, "ALICE.city")
    assert [m.id for m in chain] == [paris.id, berlin.id, rome.id]
    assert [m.superseded_by for m in chain] == [berlin.id, rome.id, None]


async def test_subjects_only_supersede_within_the_same_kind(store: MemoryStore, agent: str) -> None:
    fact = await store.add(agent, "Deploys happen on Tuesdays", subject="deploy.day")
    lesson = await store.add(
        agent, "Deploying on Fridays caused the outage", kind="lesson", subject="deploy.day"
    )
    assert lesson.action == "inserted"
    record = await store.get(agent, fact.id)
    assert record is not None and not record.superseded


async def test_redaction_happens_before_anything_is_stored(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    careful = MemoryStore(sessionmaker, HashingEmbedder(384), redact=True)
    secret = "Ops contact is dana@example.com, deploy key sk-proj-ABCdef0123456789ghijklmnop"
    result = await careful.add(agent, secret, subject="ops contact dana@example.com")
    assert result.redactions == {"email": 2, "api_key": 1}

    record = await careful.get(agent, result.id)
    assert record is not None
    assert record.content == "Ops contact is [redacted:email], deploy key [redacted:api_key]"
    assert record.subject == "ops contact [redacted:email]"
    assert record.metadata["redactions"] == {"email": 2, "api_key": 1}
    assert await careful.recall(agent, "dana@example.com", k=5, mode="text") == []

    # The same store without redaction keeps the text as given.
    plain = MemoryStore(sessionmaker, HashingEmbedder(384))
    kept = await plain.add(f"{agent}-plain", secret)
    stored = await plain.get(f"{agent}-plain", kept.id)
    assert stored is not None and stored.content == secret and kept.redactions == {}


@pytest.mark.parametrize("redact", [True, False])
async def test_a_subject_holding_a_redaction_mark_neither_supersedes_nor_merges(
    sessionmaker: async_sessionmaker[DbSession], agent: str, redact: bool
) -> None:
    """Two people's e-mail addresses as subjects both read ``[redacted:email]`` once
    redacted, and a subject can be typed that way: a write under such a subject is no new
    version of the memories under it (which it would hide), nor a repeat of one of them."""
    careful = MemoryStore(sessionmaker, HashingEmbedder(384), redact=redact)
    subjects = (
        ["dana@example.com", "eli@example.com", "erin@example.org"]
        if redact
        else ["[redacted:email]", "[REDACTED:EMAIL]", "customer [redacted:email]"]
    )
    dana = await careful.add(agent, "Prefers to be called after five", subject=subjects[0])
    eli = await careful.add(agent, "Owns the billing service", subject=subjects[1])
    erin = await careful.add(agent, "Prefers to be called after five", subject=subjects[2])
    assert [r.action for r in (dana, eli, erin)] == ["inserted"] * 3
    assert len({dana.id, eli.id, erin.id}) == 3
    for result in (dana, eli, erin):
        record = await careful.get(agent, result.id)
        assert record is not None and not record.superseded
    typed = await careful.add(agent, "Lives in Berlin", subject="[Redacted:Email]")
    assert (typed.action, typed.superseded_ids) == ("inserted", ())
    hits = await careful.recall(agent, "called after five billing", k=5)
    assert {h.id for h in hits} >= {dana.id, eli.id, erin.id}


@pytest.mark.parametrize("bad", ["nul \x00 inside", "lone \ud800 surrogate"])
async def test_text_postgres_cannot_hold_is_rejected(
    store: MemoryStore, agent: str, bad: str
) -> None:
    with pytest.raises(ValueError, match="NUL or a lone surrogate"):
        await store.add(agent, bad)
    with pytest.raises(ValueError, match="NUL or a lone surrogate"):
        await store.add(agent, "fine content", subject=bad)
    assert await store.recall(agent, "inside surrogate", k=5, include_superseded=True) == []


ALLOWED = "Deploys to the production cluster from main are allowed on Fridays after review"
NOT_ALLOWED = "Deploys to the production cluster from main are not allowed on Fridays after review"


@pytest.mark.parametrize("subject", [None, "friday deploys"])
async def test_a_near_duplicate_in_other_words_supersedes_the_existing_memory(
    store: MemoryStore, agent: str, subject: str | None
) -> None:
    """A correction nearly repeats what it corrects (one word more here): it was merged
    into the old memory, whose words recall went on returning. The newest words win; the
    old memory stays for history."""
    first = await store.add(agent, ALLOWED, importance=0.7, subject=subject)
    second = await store.add(agent, NOT_ALLOWED, importance=0.4, subject=subject)
    assert (second.action, second.superseded_ids) == ("superseded", (first.id,))
    assert second.similarity is not None and second.similarity >= store.merge_threshold
    assert "near-duplicate in other words" in second.said()
    old, new = await store.get(agent, first.id), await store.get(agent, second.id)
    assert old is not None and old.superseded_by == second.id
    assert new is not None and (new.content, new.importance) == (NOT_ALLOWED, 0.4)
    hits = await store.recall(agent, "deploys on Fridays", k=10)
    assert [(h.id, h.content) for h in hits] == [(second.id, NOT_ALLOWED)]
    # The same words again (case and the sentence's end aside) still merge; a sign is a word.
    again = await store.add(agent, NOT_ALLOWED.upper() + "!", subject=subject)
    assert (again.action, again.id) == ("merged", second.id)
    signed = await store.add(agent, "The retry limit of the deploy queue is 1", subject=subject)
    flipped = await store.add(agent, "The retry limit of the deploy queue is -1", subject=subject)
    assert flipped.action == "superseded" and signed.id in flipped.superseded_ids


async def test_invalid_arguments_are_refused(store: MemoryStore, agent: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        await store.add(agent, "   ")
    with pytest.raises(ValueError, match="importance"):
        await store.add(agent, "x", importance=1.5)
    with pytest.raises(ValueError, match="reserved"):
        await store.add(agent, "x", metadata={"merges": []})
    with pytest.raises(ValueError, match="kind"):
        await store.add(agent, "x", kind="k" * 33)


async def test_concurrent_writers_store_a_fact_once(store: MemoryStore, agent: str) -> None:
    results = await asyncio.gather(
        *(store.add(agent, "The build cache lives on the NFS share", importance=0.1 * i)
          for i in range(1, 7))
    )  # fmt: skip
    assert sorted(r.action for r in results) == ["inserted"] + ["merged"] * 5
    assert len({r.id for r in results}) == 1
    record = await store.get(agent, results[0].id)
    assert record is not None and record.importance == pytest.approx(0.6)


async def test_concurrent_updates_of_a_subject_leave_one_live_version(
    store: MemoryStore, agent: str
) -> None:
    cities = ["Oslo", "Lima", "Pune", "Kyiv", "Doha", "Baku"]
    await asyncio.gather(
        *(store.add(agent, f"The team offsite is in {city}", subject="offsite.city")
          for city in cities)
    )  # fmt: skip
    chain = await store.history(agent, "offsite.city")
    assert len(chain) == len(cities)
    assert [m.superseded for m in chain] == [True] * 5 + [False]
    # Each version points at the next one: a single chain, no forks.
    assert [m.superseded_by for m in chain[:-1]] == [m.id for m in chain[1:]]


async def test_a_keyed_supersede_is_one_transaction_and_a_retry_returns_it(
    store: MemoryStore, agent: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """The new memory, the mark on the one it supersedes and the keyed write's record
    commit together (the same transaction id on all three rows), and the same key again
    stores nothing and answers as the first write did."""
    old = await store.add(agent, "The release train leaves on Tuesdays", subject="train.day")
    new = await store.add(
        agent, "The release train now leaves on Thursdays", subject="train.day", key="k-1"
    )
    assert (new.action, new.superseded_ids) == ("superseded", (old.id,))
    async with sessionmaker() as db:
        rows = await db.execute(
            text(
                "SELECT 'memory' AS what, id, xmin::text AS tx, superseded_by AS points_to "
                "FROM memories WHERE agent_id = :a "
                "UNION ALL SELECT 'write', memory_id, xmin::text, NULL FROM memory_writes "
                "WHERE agent_id = :a AND write_key = 'k-1' ORDER BY 1, 2"
            ),
            {"a": agent},
        )
        found = [(r.what, r.id, r.tx, r.points_to) for r in rows]
    assert [(what, id_, points_to) for what, id_, _, points_to in found] == [
        ("memory", old.id, new.id),
        ("memory", new.id, None),
        ("write", new.id, None),
    ]
    assert len({tx for *_, tx, _ in found}) == 1
    again = await store.add(
        agent, "The release train now leaves on Thursdays", subject="train.day", key="k-1"
    )
    assert again == new.__class__(id=new.id, action="superseded", superseded_ids=(old.id,))
    assert len(await store.history(agent, "train.day")) == 2


ROUND_TRIPS_PER_KEYED_WRITE = 5
"""A keyed write of a new memory about a subject, on connections already acting for the
agent, by a retry: the key's check (one statement on the agent-bound connection), then
one transaction: ``BEGIN`` with the agent's role and the lock on its memories of the
kind; the key's check again under the lock, the active embedder and the same subject's
live memories (one statement); the memory with its supersede mark and the key's record
(one statement); ``COMMIT``. Counted at the driver, never timed. Before those three reads
were one statement it was 7; before the lock rode with ``BEGIN``, 8; before it was a lean
transaction, 15 round trips in two ORM transactions."""

ROUND_TRIPS_PER_FIRST_KEYED_WRITE = 4
"""The same write by a first attempt: the key is looked for only under the lock."""


@pytest.mark.parametrize(
    ("first_attempt", "most"),
    [(False, ROUND_TRIPS_PER_KEYED_WRITE), (True, ROUND_TRIPS_PER_FIRST_KEYED_WRITE)],
)
async def test_a_keyed_write_stays_within_its_round_trips(
    database_url: str, agent: str, first_attempt: bool, most: int
) -> None:
    # An engine that pings no connection used a minute ago (the worker's: a second), so a
    # stall of this machine adds no ping to the count.
    engine = make_engine(database_url, ping_after_idle=60.0)
    try:
        store = MemoryStore(make_sessionmaker(engine), HashingEmbedder(384))
        # The first write binds a connection to the agent and adopts its embedder.
        await store.add(agent, "The gate code changes monthly", subject="gate.code", key="k-0")
        with counting() as counted:
            written = await store.add(
                agent,
                "The gate code changed on the first",
                subject="gate.code",
                key="k-1",
                first_attempt=first_attempt,
            )
    finally:
        await engine.dispose()
    assert written.action == "superseded"
    assert counted.round_trips <= most, counted.round_trips
    assert counted.transactions == 1


async def test_a_written_key_answers_while_the_embedder_is_down_and_is_written_once(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    """A retry looks for its key before it embeds, so it answers with nothing to embed
    with; a first attempt embeds first and finds an earlier write under the lock, or
    right after the embedder failed; a new key with the embedder down fails."""
    up = MemoryStore(sessionmaker, HashingEmbedder(384))
    first = await up.add(agent, "Deploys freeze on Fridays", subject="deploys", key="k-1")
    with socket.socket() as closed:  # a port nothing listens on: the embedder is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "embed-model", None, 384, timeout=2)
    try:
        retried = await MemoryStore(sessionmaker, down).add(
            agent, "Deploys freeze on Fridays", subject="deploys", key="k-1"
        )
        assert retried == first
        rerun = await MemoryStore(sessionmaker, down).add(
            agent, "Deploys freeze on Fridays", subject="deploys", key="k-1", first_attempt=True
        )
        assert rerun == first
        with pytest.raises(EmbeddingError):
            await MemoryStore(sessionmaker, down).add(
                agent, "Deploys thaw on Mondays", subject="deploys", key="k-2",
                first_attempt=True,
            )  # fmt: skip
    finally:
        await down.aclose()
    again = await up.add(
        agent, "Deploys freeze on Fridays", subject="deploys", key="k-1", first_attempt=True
    )
    assert again == first
    assert len(await up.history(agent, "deploys")) == 1


async def test_concurrent_first_attempts_with_one_key_write_once(
    store: MemoryStore, agent: str
) -> None:
    """Two runs of one call at once, both on their first attempt: the lock taken with
    ``BEGIN`` orders them, and the second finds the first's write."""
    await store.add(agent, "The office opens at eight", subject="office.hours")
    new = "The office opens at nine"
    results = await asyncio.gather(
        *[
            store.add(agent, new, subject="office.hours", key="k-1", first_attempt=True)
            for _ in range(4)
        ]
    )
    assert all(result == results[0] for result in results), results
    assert results[0].action == "superseded"
    versions = await store.history(agent, "office.hours")
    assert [m.content for m in versions] == [
        "The office opens at eight",
        "The office opens at nine",
    ]
