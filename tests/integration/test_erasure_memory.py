"""Erasing a session whose memory others merged their words into: the memory is handed on
to the newest other writer under a new id, re-embedded, or (no vector of the later words
can be made) deleted and counted in the receipt; the session's notes in other memories
go, and the count of merges with them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.embeddings_endpoint import embeddings_endpoint
from tests.support.locks import waiting_for_lock
from tests.support.sessions import until
from vigil.activities.artifacts.store import FilesystemStore
from vigil.activities.erasure import Eraser
from vigil.activities.memory.embedders import Embedder, HashingEmbedder, OpenAIEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record
from vigil.activities.record.erasure import SubjectKind
from vigil.activities.record.lean import memory_lock, xact_lock

pytestmark = pytest.mark.integration

FIRST = "User prefers dark mode in the editor"
SECOND = "user prefers DARK mode in the editor!"
THIRD = "User prefers dark mode in the editor."


@pytest.fixture
def store(sessionmaker: async_sessionmaker[DbSession]) -> MemoryStore:
    return MemoryStore(sessionmaker, HashingEmbedder(384))


def _eraser(
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
    embedder: Embedder | None,
) -> Eraser:
    return Eraser(
        sessionmaker=sessionmaker,
        store=FilesystemStore(tmp_path / "artifacts"),
        temporal=client,
        embedder_access=(lambda: contextlib.nullcontext(embedder)) if embedder else None,
    )


async def _sessions(
    sessionmaker: async_sessionmaker[DbSession], agent: str, count: int
) -> list[str]:
    """``count`` recorded sessions of ``agent``."""
    ids = [f"s-{uuid.uuid4()}" for _ in range(count)]
    async with sessionmaker() as db, db.begin():
        for sid in ids:
            await record.create_session(
                db, session_id=sid, agent_id=agent, goal="g", status="completed"
            )
    return ids


async def test_the_newest_other_writer_gets_the_memory_then_loses_only_its_own_note(
    store: MemoryStore,
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    first, second = await _sessions(sessionmaker, agent, 2)
    kept = await store.add(agent, FIRST, importance=0.4, source_session_id=first)
    merged = await store.add(
        agent, SECOND, importance=0.8, source_session_id=second, key="second's call"
    )
    by_a_person = await store.add(agent, THIRD, importance=0.3)  # no session
    assert {merged.id, by_a_person.id} == {kept.id}
    assert {merged.action, by_a_person.action} == {"merged"}

    eraser = _eraser(sessionmaker, client, tmp_path, store.embedder)
    receipt = await eraser.erase("session", first, by="test")
    assert receipt.counts["memories"] == 0 and receipt.counts["memories_handed_on"] == 1
    assert "merged_memories_deleted" not in receipt.counts

    # A new id (a recall cached by id never takes it for the old words), the newest other
    # words (a person's), the larger importance of those left, and the second session's
    # note still merged into it.
    assert await store.get(agent, kept.id) is None
    [vector] = await store.embedder.embed([THIRD])
    [(handed_id, distance)] = await store.nearest(agent, vector, k=1, exact=True)
    assert handed_id != kept.id and distance == pytest.approx(0.0, abs=1e-6)
    handed = await store.get(agent, handed_id)
    assert handed is not None
    assert (handed.content, handed.source_session_id, handed.importance) == (THIRD, None, 0.8)
    assert [n["content"] for n in handed.metadata["merges"]] == [SECOND]
    assert handed.metadata["merge_count"] == 1
    assert FIRST not in str(handed.metadata)
    # The second session's keyed write follows the memory: its retry is answered with it.
    retried = await store.add(
        agent, SECOND, importance=0.8, source_session_id=second, key="second's call"
    )
    assert (retried.id, retried.action) == (handed_id, "merged")

    # Erasing the second session takes its note, and its count, from the person's memory.
    receipt = await eraser.erase("session", second, by="test")
    assert receipt.counts["memories"] == 0 and receipt.counts["merge_notes"] == 1
    after = await store.get(agent, handed_id)
    assert after is not None and after.content == THIRD
    assert after.metadata["merges"] == [] and after.metadata["merge_count"] == 0
    assert after.importance == 0.3  # the second session's 0.8 went with its note


async def test_the_importance_an_erased_merger_raised_falls_back(
    store: MemoryStore,
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    first, second, third = await _sessions(sessionmaker, agent, 3)
    kept = await store.add(agent, FIRST, importance=0.4, source_session_id=first)
    await store.add(agent, SECOND, importance=0.95, source_session_id=second)
    await store.add(agent, THIRD, importance=0.6, source_session_id=third)
    raised = await store.get(agent, kept.id)
    assert raised is not None and raised.importance == 0.95

    eraser = _eraser(sessionmaker, client, tmp_path, store.embedder)
    await eraser.erase("session", second, by="test")
    after = await store.get(agent, kept.id)
    assert after is not None and after.content == FIRST
    assert after.importance == 0.6  # its own 0.4, raised by the third session's note alone
    await eraser.erase("session", third, by="test")
    after = await store.get(agent, kept.id)
    assert after is not None and after.importance == 0.4


@asynccontextmanager
async def _embeddings(failing: list[bool]) -> AsyncIterator[OpenAIEmbedder]:
    """An OpenAI-style embedder on a loopback endpoint serving the hashing embedder's
    vectors, or a 500 while ``failing[0]`` holds."""
    vectors = HashingEmbedder(384)

    async def handle(request: web.Request) -> web.Response:
        if failing[0]:
            return web.json_response({"error": {"message": "down", "type": "x"}}, status=500)
        texts = (await request.json())["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": v}
            for i, v in enumerate(await vectors.embed(texts))
        ]
        return web.json_response({"object": "list", "data": data, "model": "m"})

    async with embeddings_endpoint(handle) as url:
        embedder = OpenAIEmbedder(url, "m", None, 384, timeout=5)
        try:
            yield embedder
        finally:
            await embedder.aclose()


@pytest.mark.parametrize("embedder", ["none", "another space", "failing"])
async def test_with_no_vector_of_the_later_words_the_memory_goes_and_is_counted(
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
    embedder: str,
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    first, second = await _sessions(sessionmaker, agent, 2)
    failing = [False]
    async with _embeddings(failing) as served:
        store = MemoryStore(sessionmaker, served)
        kept = await store.add(agent, FIRST, source_session_id=first)
        assert (await store.add(agent, SECOND, source_session_id=second)).action == "merged"
        # No embedder where the erasure runs; one of another space; this one, failing.
        access: Embedder | None = {
            "none": None, "another space": HashingEmbedder(384), "failing": served,
        }[embedder]  # fmt: skip
        failing[0] = True
        receipt = await _eraser(sessionmaker, client, tmp_path, access).erase(
            "session", first, by="test"
        )
    assert receipt.counts["memories"] == 1
    assert receipt.counts["merged_memories_deleted"] == 1
    assert receipt.counts["memories_handed_on"] == 0
    assert await store.get(agent, kept.id) is None


async def test_an_erased_memory_between_two_on_one_subject_leaves_the_older_superseded(
    store: MemoryStore,
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
) -> None:
    # Three sessions tell the subject in turn: each memory supersedes the one before.
    # Erasing the middle session left the first one current again beside the third, so
    # recall handed out both (a stale fact as current). As if the middle session never
    # was, the third supersedes the first; erasing the third then brings the first back.
    # The middle session tells it twice: the chain from the first to the third passes
    # two of its memories.
    agent = f"agent-{uuid.uuid4()}"
    sessions = await _sessions(sessionmaker, agent, 3)
    told = []
    for sid, colour in zip(
        [sessions[0], sessions[1], sessions[1], sessions[2]],
        ("red", "green", "teal", "blue"),
        strict=True,
    ):
        told.append(
            await store.add(
                agent, f"favourite colour is {colour}", subject="colour", source_session_id=sid
            )
        )
    red, green, teal, blue = told
    assert [t.superseded_ids for t in told[1:]] == [(red.id,), (green.id,), (teal.id,)]
    eraser = _eraser(sessionmaker, client, tmp_path, store.embedder)
    await eraser.erase("session", sessions[1], by="test")

    first = await store.get(agent, red.id)
    assert first is not None and first.superseded_by == blue.id
    third = await store.get(agent, blue.id)
    assert third is not None and first.superseded_at == third.created_at
    found = await store.recall(agent, "favourite colour", k=5)
    assert [m.id for m in found] == [blue.id]

    await eraser.erase("session", sessions[2], by="test")
    first = await store.get(agent, red.id)
    assert first is not None and (first.superseded_by, first.superseded_at) == (None, None)
    assert [m.id for m in await store.recall(agent, "favourite colour", k=5)] == [red.id]


@asynccontextmanager
async def _a_write_in_progress(
    sessionmaker: async_sessionmaker[DbSession], agent: str, kind: str = "fact"
) -> AsyncIterator[None]:
    """The lock a memory write of ``agent`` and ``kind`` holds for its transaction, held
    as a write between its reads and its merge or supersede holds it."""
    async with sessionmaker() as db, db.begin():
        await db.execute(text(f"SELECT {xact_lock(memory_lock(agent, kind))}"))
        yield


async def _held_until_released(
    database_url: str, sessionmaker: async_sessionmaker[DbSession], agent: str, work: Any
) -> Any:
    """Run ``work`` while a write of the agent's memories is in progress: it waits for
    the write's lock; returns ``work``'s result once the write is done."""
    async with _a_write_in_progress(sessionmaker, agent):
        task = asyncio.create_task(work)
        await until(lambda: waiting_for_lock(database_url, f"%{agent}%"), within=30)
        assert not task.done()
    return await task


async def test_a_forget_waits_for_a_write_of_its_kind_in_progress(
    store: MemoryStore, sessionmaker: async_sessionmaker[DbSession], database_url: str
) -> None:
    """A write that picked a memory to merge into (or supersede) while a person forgot it
    merged the new words into a forgotten memory (recall never returned them), or kept a
    second current memory of the subject beside the one the forget restored."""
    agent = f"agent-{uuid.uuid4()}"
    old = await store.add(agent, FIRST, subject="gate code")
    wrong = await store.add(agent, "The gate code is 0000.", subject="gate code")
    forgotten = await _held_until_released(
        database_url, sessionmaker, agent, store.forget(agent, wrong.id, by="ana")
    )
    assert forgotten is not None and forgotten.now and forgotten.restored_ids == (old.id,)


@pytest.mark.parametrize("kind", ["session", "agent"])
async def test_an_erasure_waits_for_a_write_of_its_agents_memories(
    store: MemoryStore,
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
    database_url: str,
    kind: SubjectKind,
) -> None:
    """A write that merged into a memory of a session being erased, after the erasure had
    read which of its memories others merged into, lost its words with the memory,
    uncounted; an agent's erasure deleting its memories deadlocked with a session's write
    inserting one."""
    agent = f"agent-{uuid.uuid4()}"
    [erased] = await _sessions(sessionmaker, agent, 1)
    written = await store.add(agent, FIRST, source_session_id=erased)
    eraser = _eraser(sessionmaker, client, tmp_path, store.embedder)
    subject = erased if kind == "session" else agent
    receipt = await _held_until_released(
        database_url, sessionmaker, agent, eraser.erase(kind, subject, by="test")
    )
    assert receipt.counts["memories"] == 1
    assert await store.get(agent, written.id) is None
