"""Erasing a session whose memory others merged their words into: the memory is handed on
to the newest other writer, re-embedded, or (no embedder to make its vector) deleted and
counted in the receipt."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from vigil.activities.artifacts.store import FilesystemStore
from vigil.activities.erasure import Eraser
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore

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
    store: MemoryStore | None,
) -> Eraser:
    return Eraser(
        sessionmaker=sessionmaker,
        store=FilesystemStore(tmp_path / "artifacts"),
        temporal=client,
        embedder=(lambda: contextlib.nullcontext(store.embedder)) if store else None,
    )


async def test_the_newest_other_writer_gets_the_memory_then_loses_only_its_own_note(
    store: MemoryStore,
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    first, second = f"s-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    kept = await store.add(agent, FIRST, importance=0.4, source_session_id=first)
    merged = await store.add(agent, SECOND, importance=0.8, source_session_id=second)
    by_a_person = await store.add(agent, THIRD, importance=0.3)  # no session
    assert {merged.id, by_a_person.id} == {kept.id}
    assert {merged.action, by_a_person.action} == {"merged"}

    eraser = _eraser(sessionmaker, client, tmp_path, store)
    receipt = await eraser.erase("session", first, by="test")
    assert (receipt.counts["memories"], receipt.counts["memories_handed_on"]) == (0, 1)

    record = await store.get(agent, kept.id)
    assert record is not None
    # The newest other words (a person's), the larger importance of those left, and the
    # second session's note still merged into it.
    assert (record.content, record.source_session_id, record.importance) == (THIRD, None, 0.8)
    assert [n["content"] for n in record.metadata["merges"]] == [SECOND]
    assert record.metadata["merge_count"] == 1
    [vector] = await store.embedder.embed([THIRD])
    [(nearest, distance)] = await store.nearest(agent, vector, k=1, exact=True)
    assert nearest == kept.id and distance == pytest.approx(0.0, abs=1e-6)

    # Erasing the second session takes its note and leaves the person's memory.
    receipt = await eraser.erase("session", second, by="test")
    assert (receipt.counts["memories"], receipt.counts["memories_handed_on"]) == (0, 0)
    record = await store.get(agent, kept.id)
    assert record is not None and record.content == THIRD
    assert record.metadata["merges"] == []


async def test_without_an_embedder_the_merged_memory_goes_and_the_receipt_says_so(
    store: MemoryStore,
    sessionmaker: async_sessionmaker[DbSession],
    client: Client,
    tmp_path: Path,
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    first, second = f"s-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    kept = await store.add(agent, FIRST, source_session_id=first)
    await store.add(agent, SECOND, source_session_id=second)

    receipt = await _eraser(sessionmaker, client, tmp_path, None).erase("session", first, by="test")
    assert receipt.counts["memories"] == 1
    assert receipt.counts["merge_notes_dropped"] == 1
    assert await store.get(agent, kept.id) is None
