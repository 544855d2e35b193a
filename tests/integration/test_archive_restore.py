"""Archive a finished session to the object store, prune it, restore it identical."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import put_artifact
from vigil.activities.artifacts.store import (
    ArtifactCorrupt,
    ArtifactStore,
    FilesystemStore,
    StoreUnavailable,
)
from vigil.activities.artifacts.sweeper import sweep_artifacts
from vigil.activities.artifacts.versions import NoSuchVersion, resolve_version
from vigil.activities.record.archive import (
    ARCHIVE_FORMAT,
    ArchiveInvalid,
    SessionNotFinished,
    archive_session,
    restore_session,
)
from vigil.activities.record.rls import record_maintenance
from vigil.activities.record.store import (
    NewEvent,
    NewMessage,
    append_messages,
    create_session,
    record_events,
    update_session,
)
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["fs", "s3"])
def store(
    request: pytest.FixtureRequest, settings: Settings, s3_settings: Settings
) -> ArtifactStore:
    return make_store(settings if request.param == "fs" else s3_settings)


async def _finished_session(
    sessionmaker: async_sessionmaker[DbSession], *, messages: int = 250, status: str = "completed"
) -> tuple[str, str]:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(
            db,
            session_id=session,
            agent_id=agent,
            goal="archive me",
            status="running",
            metadata={"origin": "test", "nested": {"n": 1}},
        )
        batch = [
            NewMessage(
                seq=i,
                role=("user", "assistant", "tool")[i % 3],
                content=f"message {i} " + ("NUL\x00 and \udc80 \\0" if i % 7 == 0 else "plain"),
                step=i // 3,
                name="search" if i % 3 == 2 else None,
                tool_calls=[{"id": f"c{i}", "name": "search", "arguments": '{"q": "x"}'}]
                if i % 3 == 1
                else None,
                tool_call_id=f"c{i - 1}" if i % 3 == 2 else None,
            )
            for i in range(messages)
        ]
        await append_messages(db, session, agent, batch)
        await record_events(
            db,
            session,
            agent,
            [
                NewEvent(
                    key=f"model:{i}",
                    kind="model_call",
                    step=i,
                    actor="worker",
                    reason=None if i % 2 else "because\x00",
                    payload={
                        "tokens": i,
                        "cost": 0.1 + i,
                        "exact": 1.000,
                        "text": "caf\u00e9 \udc80",
                    },
                )
                for i in range(40)
            ],
        )
        # Spread the timestamps so identity of created_at means something (the record is
        # append-only: rewriting it needs record maintenance declared).
        await record_maintenance(db)
        await db.execute(
            text(
                "UPDATE messages SET created_at = created_at - (seq * interval '1.234567 s') "
                "WHERE session_id = :s"
            ),
            {"s": session},
        )
        await update_session(db, session, status=status, finished=True)
    return agent, session


async def _dump(sessionmaker: async_sessionmaker[DbSession], table: str, session: str) -> list[Any]:
    async with sessionmaker() as db:
        return list(
            (
                await db.execute(
                    text(
                        f"SELECT to_jsonb(x)::text FROM {table} x WHERE session_id = :s ORDER BY id"
                    ),
                    {"s": session},
                )
            ).scalars()
        )


async def _session_row(sessionmaker: async_sessionmaker[DbSession], session: str) -> dict[str, Any]:
    async with sessionmaker() as db:
        value = (
            await db.execute(
                text("SELECT to_jsonb(s)::text FROM sessions s WHERE id = :s"), {"s": session}
            )
        ).scalar_one()
    return dict(json.loads(value))


def _lines(store: ArtifactStore, sha: str) -> Iterator[dict[str, Any]]:
    raw = store.get_bytes(sha)
    for line in gzip.decompress(raw).decode().splitlines():
        yield json.loads(line)


async def test_archive_prunes_and_restore_gives_identical_rows(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    _, session = await _finished_session(sessionmaker)
    messages_before = await _dump(sessionmaker, "messages", session)
    events_before = await _dump(sessionmaker, "events", session)
    session_before = await _session_row(sessionmaker, session)
    assert len(messages_before) == 250 and len(events_before) == 40

    result = await archive_session(sessionmaker, store, session, page_size=64)
    assert (result.messages, result.events) == (250, 40)
    assert not result.already_archived

    # The hot rows are gone; the session row points at a verified, registered archive.
    assert await _dump(sessionmaker, "messages", session) == []
    assert await _dump(sessionmaker, "events", session) == []
    row = await _session_row(sessionmaker, session)
    assert row["archive_uri"] == result.uri == store.uri(result.sha256)  # type: ignore[attr-defined]
    assert row["metadata"]["archive"]["sha256"] == result.sha256
    assert row["metadata"]["origin"] == "test"
    raw = store.get_bytes(result.sha256)
    assert hashlib.sha256(raw).hexdigest() == result.sha256 and len(raw) == result.size
    async with sessionmaker() as db:
        registered = (
            await db.execute(
                text("SELECT size FROM artifacts WHERE sha256 = :h"), {"h": result.sha256}
            )
        ).scalar_one()
    assert registered == result.size

    # The archive is gzip JSONL: header, session, messages, events, end.
    lines = list(_lines(store, result.sha256))
    assert lines[0]["format"] == ARCHIVE_FORMAT and lines[0]["session_id"] == session
    assert [line["t"] for line in lines[1:]] == (
        ["sessions"] + ["messages"] * 250 + ["events"] * 40 + ["end"]
    )

    # Archiving again is a no-op that returns the same archive.
    again = await archive_session(sessionmaker, store, session)
    assert again.already_archived and again.sha256 == result.sha256

    restored = await restore_session(sessionmaker, store, session, batch_size=50)
    assert (restored.messages, restored.events) == (250, 40)
    assert await _dump(sessionmaker, "messages", session) == messages_before
    assert await _dump(sessionmaker, "events", session) == events_before
    assert await _session_row(sessionmaker, session) == session_before

    # Restoring again is a no-op; archiving again yields the very same bytes (deterministic).
    assert not (await restore_session(sessionmaker, store, session)).was_archived
    second = await archive_session(sessionmaker, store, session)
    assert second.sha256 == result.sha256
    await restore_session(sessionmaker, store, session)
    assert await _dump(sessionmaker, "messages", session) == messages_before


async def test_an_archived_sessions_artifact_versions_are_not_guessed(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    """A name's versions are read from the session's events, which its archive takes: an
    archived session's `report.md` read as having one version, and its version 1 was the
    newest bytes, labelled the first. Asked of an archived session, a version is refused
    with what brings them back; the newest stays readable."""
    agent, session = await _finished_session(sessionmaker, messages=3)
    first, second = [
        await put_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name="report.md", data=data
        )
        for data in (b"first words " + uuid.uuid4().bytes, b"second words " + uuid.uuid4().bytes)
    ]
    where = {"agent_id": agent, "session_id": session, "name": "report.md"}
    assert (await resolve_version(sessionmaker, version=1, **where)).sha256 == first.sha256
    await archive_session(sessionmaker, store, session)
    with pytest.raises(NoSuchVersion, match=f"vigil restore {session}"):
        await resolve_version(sessionmaker, version=1, **where)
    assert (await resolve_version(sessionmaker, version=None, **where)).sha256 == second.sha256
    await restore_session(sessionmaker, store, session)
    assert (await resolve_version(sessionmaker, version=1, **where)).sha256 == first.sha256
    assert (await resolve_version(sessionmaker, version=2, **where)).sha256 == second.sha256


class _DeleteFails:
    """The store, except that removing bytes fails (the object store down just then)."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def delete(self, sha256: str) -> None:
        raise StoreUnavailable("the object store is down", ConnectionRefusedError())


async def test_a_restore_whose_archive_cannot_be_removed_leaves_it_to_the_sweep(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    """The archive's row and bytes were removed after the restore committed, in a second
    transaction: when removing the bytes failed, that transaction kept the row, the
    session no longer named the archive, a restore again said it was not archived, and
    the sweep kept the bytes as registered. A full copy of the transcript stayed for
    good, and the session's erasure, which finds archives through the session, left it.
    The row now goes with the restore; bytes that cannot be removed then are an orphan
    object, which the sweep removes."""
    _, session = await _finished_session(sessionmaker, messages=5)
    archived = await archive_session(sessionmaker, store, session)
    failing = cast(ArtifactStore, _DeleteFails(store))
    restored = await restore_session(sessionmaker, failing, session)
    assert restored.was_archived and restored.messages == 5
    async with sessionmaker() as db:
        row = await db.execute(
            text("SELECT count(*) FROM artifacts WHERE sha256 = :h"), {"h": archived.sha256}
        )
        assert row.scalar_one() == 0
    assert store.exists(archived.sha256)  # the bytes stayed: nothing refers to them
    swept = await sweep_artifacts(store, sessionmaker, grace=timedelta(0), dry_run=False)
    assert archived.sha256 in swept.removed, swept
    assert not store.exists(archived.sha256)


@pytest.mark.parametrize("status", ["running", "waiting_approval", "paused"])
async def test_a_session_that_is_not_finished_is_refused(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore, status: str
) -> None:
    _, session = await _finished_session(sessionmaker, messages=3, status=status)
    with pytest.raises(SessionNotFinished, match=f"is '{status}'"):
        await archive_session(sessionmaker, store, session)
    assert len(await _dump(sessionmaker, "messages", session)) == 3
    assert (await _session_row(sessionmaker, session))["archive_uri"] is None


@pytest.mark.parametrize("status", ["failed", "cancelled", "budget_exhausted", "timed_out"])
async def test_every_finished_status_can_be_archived(
    sessionmaker: async_sessionmaker[DbSession], settings: Settings, status: str
) -> None:
    store = make_store(settings)
    _, session = await _finished_session(sessionmaker, messages=5, status=status)
    result = await archive_session(sessionmaker, store, session)
    assert result.messages == 5
    await restore_session(sessionmaker, store, session)
    assert len(await _dump(sessionmaker, "messages", session)) == 5


async def test_an_empty_session_round_trips(
    sessionmaker: async_sessionmaker[DbSession], settings: Settings
) -> None:
    store = make_store(settings)
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="completed")
    result = await archive_session(sessionmaker, store, session)
    assert (result.messages, result.events) == (0, 0)
    assert (await restore_session(sessionmaker, store, session)).was_archived


async def test_a_corrupt_archive_is_refused_and_nothing_is_restored(
    sessionmaker: async_sessionmaker[DbSession], tmp_path: Path
) -> None:
    store = FilesystemStore(tmp_path)
    _, session = await _finished_session(sessionmaker, messages=30)
    result = await archive_session(sessionmaker, store, session)
    path = store.path_for(result.sha256)
    original = path.read_bytes()

    # A flipped bit: the gzip stream breaks (or the digest does).
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises((ArchiveInvalid, ArtifactCorrupt)):
        await restore_session(sessionmaker, store, session)

    # A well-formed, self-consistent archive with a message edited: only the digest
    # tells, and it is checked before the transaction commits.
    lines = gzip.decompress(original).decode().splitlines()
    assert '"content": "message 3 ' in lines[5]
    lines[5] = lines[5].replace('"content": "message', '"content": "MESSAGE')
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(ArtifactCorrupt):
        await restore_session(sessionmaker, store, session)

    assert await _dump(sessionmaker, "messages", session) == []
    assert await _dump(sessionmaker, "events", session) == []
    assert (await _session_row(sessionmaker, session))["archive_uri"] == result.uri

    path.write_bytes(original)
    assert (await restore_session(sessionmaker, store, session)).messages == 30
