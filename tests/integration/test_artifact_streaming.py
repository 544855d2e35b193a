"""A 1 GiB artifact streams through each store in and out without ever sitting in memory.

Slow by nature (several GiB of hashing and I/O), hence a module of its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import open_artifact, put_artifact
from vigil.activities.artifacts.store import ArtifactStore, FilesystemStore
from vigil.activities.record.store import create_session
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SIZE = 1024 * MiB
RSS_LIMIT = 200 * MiB


class PeakRss:
    """Samples this process's resident set size in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.01) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


class Generated:
    """1 MiB chunks, each distinct, produced on demand; hashes what it hands out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.digest = hashlib.sha256()
        self._base = os.urandom(MiB)

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.size // MiB):
            block = index.to_bytes(8, "little") + self._base[8:]
            self.digest.update(block)
            yield block


@pytest.fixture(params=["fs", "s3"])
def store(
    request: pytest.FixtureRequest, settings: Settings, s3_settings: Settings, tmp_path: Path
) -> ArtifactStore:
    if request.param == "fs":
        return FilesystemStore(tmp_path / "big")
    return make_store(s3_settings)


async def _drain(stream: AsyncIterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    async for block in stream:
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


async def test_a_gibibyte_streams_in_and_out_in_constant_memory(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="big", status="running")
    source = Generated(SIZE)
    started = time.monotonic()
    with PeakRss() as put_rss:
        ref = await put_artifact(
            store,
            sessionmaker,
            agent_id=agent,
            session_id=session,
            name="big.bin",
            chunks=iter(source),
        )
    put_seconds = time.monotonic() - started
    try:
        assert ref.size == SIZE
        assert ref.sha256 == source.digest.hexdigest()

        started = time.monotonic()
        with PeakRss() as get_rss:
            got_ref, stream = await open_artifact(
                store, sessionmaker, agent_id=agent, session_id=session, name="big.bin"
            )
            digest, size = await _drain(stream)  # the store also verifies at the end
        get_seconds = time.monotonic() - started
        assert got_ref.sha256 == ref.sha256
        assert (digest, size) == (ref.sha256, SIZE)

        print(
            f"\n{store.scheme}: put {SIZE / MiB / put_seconds:.0f} MiB/s "
            f"(RSS +{put_rss.growth / MiB:.0f} MiB), get {SIZE / MiB / get_seconds:.0f} MiB/s "
            f"(RSS +{get_rss.growth / MiB:.0f} MiB)"
        )
        assert put_rss.growth < RSS_LIMIT, put_rss.growth
        assert get_rss.growth < RSS_LIMIT, get_rss.growth
    finally:
        store.delete(ref.sha256)
        async with sessionmaker() as db, db.begin():
            await db.execute(
                text("DELETE FROM artifact_links WHERE sha256 = :h"), {"h": ref.sha256}
            )
            await db.execute(text("DELETE FROM artifacts WHERE sha256 = :h"), {"h": ref.sha256})
