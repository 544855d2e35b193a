"""MinIO stops in the middle of a multipart upload: the put fails, no row appears without
its bytes, and the retry after MinIO is back succeeds.

MinIO is shared by the whole test run, so it is started again whatever happens.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import get_artifact, put_artifact
from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.record.store import create_session
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.wiring import make_s3_client

# Stops a part of the shared test stack: runs alone, after the parallel phase.
pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

MiB = 1024 * 1024
SIZE = 64 * MiB
STOP_AT = 24 * MiB  # past the first 16 MiB part: the multipart upload is under way


def _ensure_up(stack: Stack) -> None:
    if not (stack.minio.running() and stack.minio.ready()):
        stack.minio.start(print)
        stack.minio.wait(print)


class Upload:
    """64 MiB in 1 MiB chunks. With ``signal``, at STOP_AT bytes it tells the stopping
    thread and waits until MinIO is down before producing the rest (a slow producer), so
    the stop always lands in the middle of the multipart upload."""

    def __init__(self) -> None:
        self.base = os.urandom(MiB)
        self.reached = threading.Event()
        self.stopped = threading.Event()
        self.sha256 = hashlib.sha256(b"".join(self._blocks())).hexdigest()

    def _blocks(self) -> Iterator[bytes]:
        for index in range(SIZE // MiB):
            yield index.to_bytes(8, "little") + self.base[8:]

    def chunks(self, *, signal: bool) -> Iterator[bytes]:
        sent = 0
        for block in self._blocks():
            if signal and sent == STOP_AT:
                self.reached.set()
                self.stopped.wait(60)
            sent += len(block)
            yield block


async def _every_row_has_its_bytes(
    sessionmaker: async_sessionmaker[DbSession], store: S3Store, since: datetime
) -> int:
    """Every row of this bucket written since the test began has bytes that verify."""
    prefix = f"s3://{store.bucket}/"
    async with sessionmaker() as db:
        rows = (
            await db.execute(
                text(
                    "SELECT sha256, size FROM artifacts WHERE starts_with(storage_uri, :p) "
                    "AND created_at >= :since"
                ),
                {"p": prefix, "since": since},
            )
        ).all()
    for sha, size in rows:
        data = await asyncio.to_thread(store.get_bytes, sha)  # verifies the digest
        assert len(data) == size, sha
    return len(rows)


async def test_a_put_interrupted_by_a_minio_restart_leaves_no_row_and_retries_cleanly(
    stack: Stack, s3_settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    store = S3Store(make_s3_client(s3_settings), s3_settings.s3_bucket)
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")
        began: datetime = (await db.execute(text("SELECT now()"))).scalar_one()
    upload = Upload()
    was_stopped: list[bool] = []

    def stop_minio() -> None:
        try:
            if upload.reached.wait(60):
                stack.minio.stop()
                was_stopped.append(not stack.minio.running())
        finally:
            upload.stopped.set()  # let the producer go on, into a dead endpoint

    stopper = threading.Thread(target=stop_minio, daemon=True)
    stopper.start()
    try:
        with pytest.raises(Exception) as caught:
            await put_artifact(
                store,
                sessionmaker,
                agent_id=agent,
                session_id=session,
                name="big.bin",
                chunks=upload.chunks(signal=True),
            )
        assert was_stopped == [True], f"failed before MinIO was stopped: {caught.value!r}"
        print(f"\nput failed as expected: {type(caught.value).__name__}")

        # Whatever reached MinIO, nothing was registered without its bytes.
        async with sessionmaker() as db:
            assert (
                await db.execute(
                    text("SELECT count(*) FROM artifacts WHERE sha256 = :h"), {"h": upload.sha256}
                )
            ).scalar_one() == 0
            assert (
                await db.execute(
                    text("SELECT count(*) FROM artifact_links WHERE session_id = :s"),
                    {"s": session},
                )
            ).scalar_one() == 0
    finally:
        upload.reached.set()
        upload.stopped.set()
        await asyncio.to_thread(stopper.join, 60)
        await asyncio.to_thread(_ensure_up, stack)

    # The retry (Temporal's, in production) succeeds once MinIO is back.
    ref = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="big.bin",
        chunks=upload.chunks(signal=False),
    )
    assert ref.sha256 == upload.sha256 and ref.size == SIZE
    _, data = await get_artifact(
        store, sessionmaker, agent_id=agent, session_id=session, name="big.bin"
    )
    assert hashlib.sha256(data).hexdigest() == upload.sha256
    del data
    assert await _every_row_has_its_bytes(sessionmaker, store, began) >= 1

    store.delete(ref.sha256)
    async with sessionmaker() as db, db.begin():
        await db.execute(text("DELETE FROM artifact_links WHERE sha256 = :h"), {"h": ref.sha256})
        await db.execute(text("DELETE FROM artifacts WHERE sha256 = :h"), {"h": ref.sha256})
