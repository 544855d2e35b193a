"""The artifacts registry: bytes first, then rows; versions; lookups scoped to the agent."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import (
    InvalidArtifactName,
    InvalidMediaType,
    get_artifact,
    list_artifacts,
    open_artifact,
    put_artifact,
    resolve_artifact,
    validate_name,
)
from vigil.activities.artifacts.store import ArtifactCorrupt, ArtifactNotFound, ArtifactStore
from vigil.activities.record.store import create_session, list_events
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["fs", "s3"])
def store(
    request: pytest.FixtureRequest, settings: Settings, s3_settings: Settings
) -> ArtifactStore:
    return make_store(settings if request.param == "fs" else s3_settings)


async def _session(sessionmaker: async_sessionmaker[DbSession]) -> tuple[str, str]:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")
    return agent, session


async def _rows(sessionmaker: async_sessionmaker[DbSession], sha: str) -> tuple[int, int]:
    async with sessionmaker() as db:
        artifacts = (
            await db.execute(text("SELECT count(*) FROM artifacts WHERE sha256 = :h"), {"h": sha})
        ).scalar_one()
        links = (
            await db.execute(
                text("SELECT count(*) FROM artifact_links WHERE sha256 = :h"), {"h": sha}
            )
        ).scalar_one()
    return int(artifacts), int(links)


async def test_put_then_get_by_name_and_by_digest(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    agent, session = await _session(sessionmaker)
    data = os.urandom(200_000)
    ref = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="out/report.csv",
        data=data,
        mime_type="text/csv",
    )
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert await _rows(sessionmaker, ref.sha256) == (1, 1)

    by_name, got = await get_artifact(
        store, sessionmaker, agent_id=agent, session_id=session, name="out/report.csv"
    )
    assert got == data and by_name.mime_type == "text/csv" and by_name.sha256 == ref.sha256
    _, by_sha = await get_artifact(store, sessionmaker, agent_id=agent, sha256=ref.sha256)
    assert by_sha == data
    _, stream = await open_artifact(
        store, sessionmaker, agent_id=agent, session_id=session, name="out/report.csv"
    )
    assert b"".join([chunk async for chunk in stream]) == data
    assert [
        a.name for a in await list_artifacts(sessionmaker, agent_id=agent, session_id=session)
    ] == ["out/report.csv"]

    # A retried put of the same bytes changes nothing.
    again = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="out/report.csv",
        chunks=iter([data[:1000], data[1000:]]),
        mime_type="text/csv",
    )
    assert again.sha256 == ref.sha256
    assert await _rows(sessionmaker, ref.sha256) == (1, 1)
    async with sessionmaker() as db:
        assert await list_events(db, session, kind="artifact_replaced") == []


async def test_a_new_version_moves_the_name_and_keeps_the_old_bytes(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    agent, session = await _session(sessionmaker)
    v1 = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="notes.md",
        data=b"version one " + os.urandom(8),
    )
    v2 = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="notes.md",
        data=b"version two " + os.urandom(8),
    )
    ref, data = await get_artifact(
        store, sessionmaker, agent_id=agent, session_id=session, name="notes.md"
    )
    assert ref.sha256 == v2.sha256 and data.startswith(b"version two")
    # The first version is still stored, registered and readable by digest.
    assert await _rows(sessionmaker, v1.sha256) == (1, 0)
    assert store.get_bytes(v1.sha256).startswith(b"version one")
    async with sessionmaker() as db:
        events = await list_events(db, session, kind="artifact_replaced")
    assert [(e.payload["previous_sha256"], e.payload["sha256"]) for e in events] == [
        (v1.sha256, v2.sha256)
    ]
    assert len(await list_artifacts(sessionmaker, agent_id=agent, session_id=session)) == 1

    # Going back and forth between versions records every change.
    one, two = store.get_bytes(v1.sha256), store.get_bytes(v2.sha256)
    for data in (one, two):
        await put_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name="notes.md", data=data
        )
    async with sessionmaker() as db:
        events = await list_events(db, session, kind="artifact_replaced")
    assert [(e.payload["previous_sha256"], e.payload["sha256"]) for e in events] == [
        (v1.sha256, v2.sha256),
        (v2.sha256, v1.sha256),
        (v1.sha256, v2.sha256),
    ]


async def test_another_agent_can_neither_read_nor_link_into_the_session(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    agent, session = await _session(sessionmaker)
    intruder, _ = await _session(sessionmaker)
    ref = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="secret.txt",
        data=b"for agent A only " + os.urandom(8),
    )
    with pytest.raises(ArtifactNotFound):
        await resolve_artifact(
            sessionmaker, agent_id=intruder, session_id=session, name="secret.txt"
        )
    with pytest.raises(ArtifactNotFound):
        await get_artifact(store, sessionmaker, agent_id=intruder, sha256=ref.sha256)
    assert await list_artifacts(sessionmaker, agent_id=intruder, session_id=session) == []
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="row-level security"):
        await put_artifact(
            store,
            sessionmaker,
            agent_id=intruder,
            session_id=session,
            name="planted.txt",
            data=b"planted",
        )
    assert len(await list_artifacts(sessionmaker, agent_id=agent, session_id=session)) == 1


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "a\x00b",
        "line\nbreak",
        "tab\there",
        "esc\x1b[31m",
        "bidi\u202eexe.txt",
        "zero\u200bwidth",
        "x" * 256,
        "\udc80",
        "sep\u2028",
        ".",
        "..",
        "a/..",
        "a\\b",
        "notes.md ",  # listed as "notes.md": it read as another artifact's name
        " notes.md",
        "dir/ notes.md",  # its file would be called " notes.md"
        "dir /notes.md",
        "cafe\u0301.txt",  # "café.txt" decomposed: listed as the composed one, another name
        "A\u030a/notes.md",  # "Å" decomposed, in a folder's part
    ],
)
async def test_bad_names_are_refused_before_anything_is_written(
    sessionmaker: async_sessionmaker[DbSession], settings: Settings, name: str
) -> None:
    store = make_store(settings)
    agent, session = await _session(sessionmaker)
    payload = os.urandom(64)
    with pytest.raises(InvalidArtifactName):
        await put_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name=name, data=payload
        )
    assert not store.exists(hashlib.sha256(payload).hexdigest())


@pytest.mark.parametrize(
    "mime_type",
    [
        "text/html\r\nX-Evil: 1",
        "text/plain\n",
        "text",
        "text/plain\n; a=b",
        "text/plain" + "; p=" + "x" * 100 + "; q=" + "y" * 100,  # 213 characters
    ],
)
async def test_bad_media_types_are_refused_before_anything_is_written(
    sessionmaker: async_sessionmaker[DbSession], settings: Settings, mime_type: str
) -> None:
    store = make_store(settings)
    agent, session = await _session(sessionmaker)
    payload = os.urandom(64)
    with pytest.raises(InvalidMediaType, match=r"is not a media type|at most 200"):
        await put_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name="x.txt",
            data=payload, mime_type=mime_type,
        )  # fmt: skip
    assert not store.exists(hashlib.sha256(payload).hexdigest())


async def test_a_media_type_keeps_its_parameters_or_drops_those_it_cannot_serve(
    sessionmaker: async_sessionmaker[DbSession], settings: Settings
) -> None:
    store = make_store(settings)
    agent, session = await _session(sessionmaker)
    for given, kept in (
        ("text/markdown; charset=utf-8", "text/markdown; charset=utf-8"),
        ('text/plain; charset="utf-8"', "text/plain"),  # a quoted value, as uploads drop it
    ):
        ref = await put_artifact(
            store, sessionmaker, agent_id=agent, session_id=session, name="x.md",
            data=given.encode(), mime_type=given,
        )  # fmt: skip
        assert ref.mime_type == kept


def test_ordinary_names_are_accepted() -> None:
    for name in (
        "report.md",
        "dir/sub/file.txt",
        "../../etc/passwd",
        "C:/x",
        "./here",
        "..x",
        "%2e%2e%2f",
        "naïve résumé.pdf",
        "日本語.txt",
        "x" * 255,
    ):
        assert validate_name(name, new=True) == name
    assert validate_name("written before ") == "written before "  # still readable
    assert validate_name("cafe\u0301.txt") == "cafe\u0301.txt"  # so is one decomposed


def test_a_decomposed_name_is_told_its_composed_form() -> None:
    with pytest.raises(InvalidArtifactName, match="NFC") as refused:
        validate_name("cafe\u0301.txt", new=True)
    assert "'caf\u00e9.txt'" in str(refused.value)


async def test_bytes_that_fail_their_digest_are_refused_on_read(
    sessionmaker: async_sessionmaker[DbSession], settings: Settings
) -> None:
    store = make_store(settings)
    agent, session = await _session(sessionmaker)
    ref = await put_artifact(
        store,
        sessionmaker,
        agent_id=agent,
        session_id=session,
        name="data.bin",
        data=os.urandom(3 * 1024 * 1024),
    )
    path = store.path_for(ref.sha256)  # type: ignore[attr-defined]
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ArtifactCorrupt):
        await get_artifact(store, sessionmaker, agent_id=agent, session_id=session, name="data.bin")
    _, stream = await open_artifact(store, sessionmaker, agent_id=agent, sha256=ref.sha256)
    with pytest.raises(ArtifactCorrupt):
        async for _ in stream:
            pass
    store.delete(ref.sha256)


async def test_bytes_are_durable_before_the_row_and_a_failed_row_leaves_no_row(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    """A put for a session that does not exist stores the bytes, then fails the rows:
    the object is an orphan (for the sweeper), never a row without bytes."""
    agent, _ = await _session(sessionmaker)
    data = os.urandom(10_000)

    def chunks() -> Iterator[bytes]:
        yield data

    with pytest.raises(Exception, match=r"row-level security|foreign key"):
        await put_artifact(
            store,
            sessionmaker,
            agent_id=agent,
            session_id=f"s-{uuid.uuid4()}",
            name="x",
            chunks=chunks(),
        )
    sha = hashlib.sha256(data).hexdigest()
    assert store.exists(sha)
    assert await _rows(sessionmaker, sha) == (0, 0)
    store.delete(sha)


async def test_the_type_is_each_names_own(
    sessionmaker: async_sessionmaker[DbSession], store: ArtifactStore
) -> None:
    """The same bytes under two names with two types: each name keeps its type in every
    read, the model's context read too (``vigil_context_read``)."""
    from vigil.activities.record.rls import acting_for
    from vigil.activities.record.store import context_rows

    agent, session = await _session(sessionmaker)
    data = os.urandom(500)
    for name, mime in (("a.txt", "text/plain"), ("b.csv", "text/csv")):
        put = await put_artifact(
            store,
            sessionmaker,
            agent_id=agent,
            session_id=session,
            name=name,
            data=data,
            mime_type=mime,
        )
        assert put.mime_type == mime and put.created_at is not None
    listed = await list_artifacts(sessionmaker, agent_id=agent, session_id=session)
    assert [(r.name, r.mime_type) for r in listed] == [
        ("a.txt", "text/plain"),
        ("b.csv", "text/csv"),
    ]
    async with acting_for(sessionmaker, agent) as db:
        rows = await context_rows(
            db,
            session,
            reply_seq=0,
            summary_kind="summary",
            held_summary=None,
            after_seq=None,
            gaps=[],
            recent=1,
            with_artifacts=True,
            memory_ids=None,
            lock_ms=None,
        )
    assert [(r["name"], r["mime_type"]) for r in rows.artifacts] == [
        ("a.txt", "text/plain"),
        ("b.csv", "text/csv"),
    ]
