"""Names from agents and tools never become paths or keys: no traversal, on either backend."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import InvalidArtifactName, get_artifact, put_artifact
from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.artifacts.store import ArtifactError, FilesystemStore
from vigil.activities.record.store import create_session
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_s3_client

pytestmark = pytest.mark.integration

HOSTILE = [
    "../../etc/passwd",
    "../../../../../../../../../../tmp/vigil-escaped",
    "/etc/passwd",
    "/tmp/vigil-escaped-absolute",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2F..%2F..%2Ftmp%2Fvigil-escaped",
    "%252e%252e%252f",
    "a/../../../b",
    "./././../x",
    "//server/share/x",
    "~/.ssh/authorized_keys",
    "file:///etc/passwd",
    "s3://other-bucket/key",
    "sha256/00/00/" + "0" * 64,
    "tmp/overwrite-me",
]
REFUSED = [
    "../../etc/passwd\x00.txt",
    "\x00",
    "ok\x00/../../x",
    "..\n/etc",
    "..\\..\\windows\\system32\\config",
    "C:\\Windows\\win.ini",
    "..",
    ".",
]


async def _session(sessionmaker: async_sessionmaker[DbSession]) -> tuple[str, str]:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")
    return agent, session


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _outside_state() -> tuple[int, str, bool, bool]:
    """What a traversal would change outside the store: /etc/passwd and /tmp targets."""
    passwd = Path("/etc/passwd")
    return (
        passwd.stat().st_mtime_ns,
        hashlib.sha256(passwd.read_bytes()).hexdigest(),
        Path("/tmp/vigil-escaped").exists(),
        Path("/tmp/vigil-escaped-absolute").exists(),
    )


def _payloads() -> Iterator[tuple[str, bytes]]:
    for name in HOSTILE:
        yield name, f"content for {name!r} ".encode() + os.urandom(16)


async def _put_all(
    store: FilesystemStore | S3Store, sessionmaker: async_sessionmaker[DbSession]
) -> set[str]:
    agent, session = await _session(sessionmaker)
    digests = set()
    for name, data in _payloads():
        ref = await put_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name=name, data=data
        )
        digests.add(ref.sha256)
        # The name is a label: it reads back exactly what was written under it.
        _, got = await get_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name=name
        )
        assert got == data
    for name in REFUSED:
        with pytest.raises(InvalidArtifactName):
            await put_artifact(
                store,
                sessionmaker,
                agent_id=agent,
                session_id=session,
                name=name,
                data=b"refused " + name.encode("utf-8", "replace"),
            )
    return digests


async def test_filesystem_objects_land_under_the_root_only(
    sessionmaker: async_sessionmaker[DbSession], tmp_path: Path
) -> None:
    sandbox = tmp_path / "sandbox"
    root = sandbox / "store"
    outside = tmp_path / "outside-marker"
    outside.write_text("untouched")
    store = FilesystemStore(root)
    outside_before = _outside_state()
    before = _files(tmp_path)

    digests = await _put_all(store, sessionmaker)

    created = _files(tmp_path) - before
    assert created == {store.path_for(d) for d in digests}
    assert all(p.resolve().is_relative_to(root / "sha256") for p in created)
    assert all(p.name in digests for p in created)
    assert list(store.tmp.iterdir()) == []
    assert outside.read_text() == "untouched"
    assert _outside_state() == outside_before


async def test_s3_objects_land_under_the_digest_prefix_only(
    sessionmaker: async_sessionmaker[DbSession], s3_settings: Settings
) -> None:
    client = make_s3_client(s3_settings)
    bucket = f"vigil-paths-{uuid.uuid4().hex[:12]}"
    buckets_before = {b.name for b in client.list_buckets()}
    client.make_bucket(bucket)
    store = S3Store(client, bucket)
    try:
        digests = await _put_all(store, sessionmaker)
        keys = {o.object_name for o in client.list_objects(bucket, recursive=True)}
        assert keys == {store.key_for(d) for d in digests}
        assert {b.name for b in client.list_buckets()} == buckets_before | {bucket}
    finally:
        for obj in client.list_objects(bucket, recursive=True):
            client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)


@pytest.mark.parametrize(
    "address",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..\\x",
        "%2e%2e%2f",
        "a" * 63 + "/",
        "0" * 63 + "\x00",
        "A" * 64,
        "g" * 64,
        "0" * 65,
        "",
    ],
)
def test_the_stores_accept_nothing_but_a_digest_as_an_address(tmp_path: Path, address: str) -> None:
    store = FilesystemStore(tmp_path)
    with pytest.raises(ArtifactError):
        store.path_for(address)
    with pytest.raises(ArtifactError):
        store.open(address)
    with pytest.raises(ArtifactError):
        S3Store.key_for(address)
