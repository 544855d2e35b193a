"""The sweeper finds orphan objects and rows without bytes, and removes orphans only when asked."""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import lock_digest, put_artifact, register_object
from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.artifacts.store import ArtifactStore, FilesystemStore
from vigil.activities.artifacts.sweeper import sweep_artifacts
from vigil.activities.record.store import create_session
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_s3_client

pytestmark = pytest.mark.integration


@pytest.fixture(params=["fs", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_settings: Settings
) -> AsyncIterator[ArtifactStore]:
    """A store of its own: the sweep must see only this test's objects."""
    if request.param == "fs":
        yield FilesystemStore(tmp_path / "store")
        return
    client = make_s3_client(s3_settings)
    bucket = f"vigil-sweep-{uuid.uuid4().hex[:12]}"
    client.make_bucket(bucket)
    try:
        yield S3Store(client, bucket)
    finally:
        for obj in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)


async def _session(sessionmaker: async_sessionmaker[DbSession]) -> tuple[str, str]:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")
    return agent, session


def _stale_temporary(store: ArtifactStore) -> str:
    if isinstance(store, FilesystemStore):
        path = store.tmp / "put-crashed"
        path.write_bytes(b"half an upload")
        old = time.time() - 3 * 86400
        os.utime(path, (old, old))
        return path.name
    assert isinstance(store, S3Store)
    store.client.put_object(store.bucket, "tmp/crashed", io.BytesIO(b"half"), length=4)
    return "tmp/crashed"


async def test_orphans_and_missing_objects_are_found_and_orphans_removed_on_request(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    agent, session = await _session(sessionmaker)
    kept = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="kept",
        data=b"kept " + os.urandom(16),
    )
    lost = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="lost",
        data=b"lost " + os.urandom(16),
    )
    store.delete(lost.sha256)  # a row whose bytes are gone
    orphans = {store.put_bytes(b"orphan %d " % i + os.urandom(16)).sha256 for i in range(3)}
    temporary = _stale_temporary(store)
    # Objects written just now are "old" to a sweep that looks a day ahead (S3 sets
    # modification times itself, so the clock is moved instead of the objects).
    later = datetime.now(UTC) + timedelta(days=1)

    dry = await sweep_artifacts(store, sessionmaker, grace=timedelta(hours=1), now=later)
    assert dry.dry_run
    assert set(dry.orphan_objects) == orphans
    assert dry.missing_objects == [lost.sha256]  # rows of other stores are not this store's
    assert dry.stale_temporaries == [temporary]
    assert dry.young_orphans == [] and dry.removed == []
    assert all(store.exists(sha) for sha in orphans)
    assert "3 orphan objects" in dry.summary()

    wet = await sweep_artifacts(
        store, sessionmaker, grace=timedelta(hours=1), now=later, dry_run=False
    )
    assert set(wet.removed) == orphans | {temporary}
    assert not any(store.exists(sha) for sha in orphans)
    assert store.exists(kept.sha256)
    assert wet.missing_objects == [lost.sha256]  # reported, never "repaired"

    after = await sweep_artifacts(store, sessionmaker, grace=timedelta(hours=1), now=later)
    assert after.orphan_objects == [] and after.stale_temporaries == []


async def test_young_orphans_are_left_alone(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    young = store.put_bytes(b"young " + os.urandom(16)).sha256
    report = await sweep_artifacts(store, sessionmaker, grace=timedelta(hours=1), dry_run=False)
    assert report.young_orphans == [young]
    assert report.orphan_objects == [] and report.removed == []
    assert store.exists(young)


async def test_an_orphan_being_registered_is_not_swept(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    """The put/sweep race: bytes exist, their row is being committed while the sweeper runs."""
    stored = store.put_bytes(b"racing " + os.urandom(16))
    later = datetime.now(UTC) + timedelta(days=1)
    async with sessionmaker() as db, db.begin():
        await register_object(db, store, stored, "application/octet-stream")  # shared lock held
        sweep = asyncio.create_task(
            sweep_artifacts(store, sessionmaker, grace=timedelta(0), now=later, dry_run=False)
        )
        await asyncio.sleep(1.0)
        assert not sweep.done()  # waiting for the digest's lock, not deleting
    report = await asyncio.wait_for(sweep, 30)
    assert report.removed == []
    assert store.exists(stored.sha256)


async def test_a_put_after_the_bytes_were_swept_is_refused_not_dangling(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    """If the sweeper wins the race, registering fails (retryable); no row without bytes."""
    stored = store.put_bytes(b"swept " + os.urandom(16))
    later = datetime.now(UTC) + timedelta(days=1)
    await sweep_artifacts(store, sessionmaker, grace=timedelta(0), now=later, dry_run=False)
    assert not store.exists(stored.sha256)
    from vigil.activities.artifacts.registry import ArtifactBytesLost

    with pytest.raises(ArtifactBytesLost):
        async with sessionmaker() as db, db.begin():
            await register_object(db, store, stored, "application/octet-stream")
    async with sessionmaker() as db, db.begin():
        await lock_digest(db, stored.sha256, exclusive=True)  # the lock is free again
