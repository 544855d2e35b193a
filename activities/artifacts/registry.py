"""The artifacts registry: durable bytes first, then the rows that name them.

``put_artifact`` writes the bytes to the object store (fsync'd file or completed S3
PUT) before it commits the ``artifacts`` row and the session's ``artifact_links`` row,
so a committed row always has its bytes. Registering bytes is system work (the owner's
rights): it also notes the agent as a holder of them (``artifact_holders``). The link is
written acting for the agent (row-level security): an agent links only into its own
sessions and only bytes it holds, and sees an artifact row only if it holds it, so
knowing another agent's sha256 gets it nothing.

Names come from agents and tools. They are validated (length, no NUL, no control or
formatting characters) and are only ever labels in the database: the store addresses
bytes by sha256 alone, so no name can reach a path or an object key.

Versions: ``(session_id, name)`` is unique and names the latest version. Writing new
bytes under an existing name moves the link to them and records an
``artifact_replaced`` event with both digests; the earlier bytes and their
``artifacts`` row are kept and stay readable by sha256. Writing the same bytes again
is a no-op, so a retried activity changes nothing.

A sweeper (``activities.artifacts.sweeper``) may delete objects that have no row. The
two coordinate on a per-digest advisory lock: the row is committed under a shared lock
after checking the bytes are still there, the sweeper deletes under an exclusive lock
after checking there is still no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import mimetypes
import re
import unicodedata
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.store import (
    ArtifactError,
    ArtifactStore,
    StoredObject,
    UnknownArtifact,
    check_sha,
)
from vigil.activities.record.lean import Statements
from vigil.activities.record.rls import acting_for
from vigil.activities.record.sql import sql
from vigil.activities.record.store import NewEvent, record_events
from vigil.schema import event_kinds

MAX_NAME_CHARS = 255
MAX_NAME_BYTES = 1024
DEFAULT_MIME = "application/octet-stream"
MAX_MEDIA_TYPE_CHARS = 200
_MEDIA_WORD = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
MEDIA_TYPE = re.compile(
    rf"{_MEDIA_WORD}/{_MEDIA_WORD}(?:[ \t]*;[ \t]*{_MEDIA_WORD}={_MEDIA_WORD})*"
)
"""A media type as an artifact keeps and serves it (whole: ``fullmatch``), parameters
(``; charset=utf-8``) included: no quotes, no line breaks."""
# pg_advisory_xact_lock(int4, int4): a fixed namespace ("vigA") and 32 bits of the digest.
_LOCK_NAMESPACE = 0x76696741
# Unicode categories refused in names: controls, format characters (bidi overrides,
# zero-width), surrogates, private use, unassigned, line and paragraph separators.
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}

T = TypeVar("T")


class InvalidArtifactName(ArtifactError, ValueError):
    """A name an agent or tool gave is not acceptable; permanent, never retried."""


class InvalidMediaType(ArtifactError, ValueError):
    """A media type an agent, a tool or an upload gave is not one; permanent."""


_NAMES = mimetypes.MimeTypes()  # Python's own table, not the machine's mime.types
for _ext, _type in ((".md", "text/markdown"), (".markdown", "text/markdown")):
    _NAMES.add_type(_type, _ext)
for _ext in (".yaml", ".yml"):
    _NAMES.add_type("application/yaml", _ext)
_TEXT_APPLICATIONS = {"application/json", "application/yaml", "application/xml"}


def type_of_name(name: str) -> str:
    """The media type ``name``'s extension says (DEFAULT_MIME when it says none): what an
    upload sent without a type is kept under."""
    guessed, _encoding = _NAMES.guess_type(name.rsplit("/", 1)[-1], strict=False)
    return guessed or DEFAULT_MIME


def type_of_text(name: str) -> str:
    """The media type of text written under ``name`` (UTF-8): its extension's when that
    names text (``notes.md``: ``text/markdown; charset=utf-8``), else plain text."""
    named = type_of_name(name)
    if named.startswith("text/") or named in _TEXT_APPLICATIONS:
        return f"{named}; charset=utf-8"
    return "text/plain; charset=utf-8"


def is_media_type(mime_type: str) -> bool:
    """Whether an artifact may keep ``mime_type`` as it is."""
    return len(mime_type) <= MAX_MEDIA_TYPE_CHARS and MEDIA_TYPE.fullmatch(mime_type) is not None


def check_media_type(mime_type: str) -> str:
    """The media type an artifact keeps for ``mime_type``: as given, or its type/subtype
    alone when only its parameters cannot be served back as given (a quoted value, as an
    upload's are dropped); else InvalidMediaType."""
    if len(mime_type) > MAX_MEDIA_TYPE_CHARS:
        raise InvalidMediaType(
            f"the media type {mime_type[:80]!r}... is {len(mime_type)} characters: at most "
            f"{MAX_MEDIA_TYPE_CHARS}"
        )
    if is_media_type(mime_type):
        return mime_type
    base = mime_type.split(";", 1)[0].strip(" \t")
    if base != mime_type and is_media_type(base):
        return base
    raise InvalidMediaType(
        f"{mime_type[:80]!r} is not a media type: type/subtype, then any "
        "'; name=value' parameters (e.g. 'text/markdown; charset=utf-8')"
    )


class ArtifactBytesLost(ArtifactError):
    """The bytes vanished before their row was committed (swept); writing again fixes it."""


@dataclass(frozen=True)
class ArtifactRef:
    """A session's named reference to content-addressed bytes."""

    session_id: str
    name: str
    sha256: str
    size: int
    mime_type: str
    storage_uri: str
    created_at: datetime | None = None
    version: int | None = None
    """Which version of the name these bytes are (1: its first), when the write that
    made the reference counted it."""


def validate_name(name: str, *, new: bool = False) -> str:
    """Return ``name`` unchanged if acceptable as an artifact label, else raise.

    Slashes, dots and percent signs are allowed: a name is never used as a path in the
    store. A ``new`` name (one being written) must also end in something a file can be
    called, as ``vigil artifact get`` names its file after it: not ``.`` or ``..`` (an
    HTTP client also resolves such a segment away), it holds no backslash (a path
    separator on Windows, a ``/`` to browsers), no space begins or ends it (``foo ``
    is listed as ``foo``), and it is in Unicode's composed form (NFC: ``café`` written
    with a combining accent shows as the ``café`` with one character, yet would name
    another artifact). Names written before stay readable.
    """
    if not isinstance(name, str):
        raise InvalidArtifactName("an artifact name must be a string")
    if not name or not name.strip():
        raise InvalidArtifactName("an artifact name must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArtifactName(f"an artifact name is at most {MAX_NAME_CHARS} characters")
    for ch in name:
        category = unicodedata.category(ch)
        if category in _REFUSED_CATEGORIES:
            raise InvalidArtifactName(
                f"an artifact name must not contain U+{ord(ch):04X} ({category})"
            )
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidArtifactName(f"an artifact name is at most {MAX_NAME_BYTES} bytes")
    if new and any(part != part.strip() for part in name.split("/")):
        raise InvalidArtifactName(
            f"an artifact name, and each part of it between slashes, must not begin or end "
            f"with a space: {name!r} (it would read as the name without it)"
        )
    if new and unicodedata.normalize("NFC", name) != name:
        raise InvalidArtifactName(
            f"an artifact name must be in Unicode's composed form (NFC): write "
            f"{unicodedata.normalize('NFC', name)!r} (it looks the same as {name!r}, whose "
            "accents are separate characters, but would name another artifact)"
        )
    if new and "\\" in name:
        raise InvalidArtifactName(
            f"an artifact name must not contain a backslash: {name!r} (use '/')"
        )
    if new and name.rsplit("/", 1)[-1] in (".", ".."):
        raise InvalidArtifactName(
            f"an artifact name must not be, or end in, '.' or '..': {name!r} "
            "(no file can be called so)"
        )
    return name


def _lock_key(sha256: str) -> int:
    value = int(check_sha(sha256)[:8], 16)
    return value - (1 << 32) if value >= 1 << 31 else value


async def lock_digest(db: DbSession, sha256: str, *, exclusive: bool) -> None:
    """Take the per-digest advisory lock for the rest of ``db``'s transaction."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await db.execute(
        sql(f"SELECT {function}(:ns, :key)"), {"ns": _LOCK_NAMESPACE, "key": _lock_key(sha256)}
    )


async def register_object(
    db: DbSession,
    store: ArtifactStore,
    stored: StoredObject,
    mime_type: str,
    *,
    holder: str | None = None,
) -> None:
    """Insert the ``artifacts`` row of bytes already in ``store`` (idempotent), and note
    ``holder`` as an agent whose work stored them (so it may link and read them).

    System work: run with the owner's rights, never acting for an agent, since only the
    system knows the bytes were really stored. Raises ArtifactBytesLost if the sweeper
    removed the bytes since they were written.
    """
    await lock_digest(db, stored.sha256, exclusive=False)
    if not await asyncio.to_thread(store.exists, stored.sha256):
        raise ArtifactBytesLost(f"artifact {stored.sha256} vanished before it was registered")
    await db.execute(
        sql(
            "INSERT INTO artifacts (sha256, size, mime_type, storage_uri) "
            "VALUES (:sha, :size, :mime, :uri) ON CONFLICT (sha256) DO NOTHING"
        ),
        {"sha": stored.sha256, "size": stored.size, "mime": mime_type, "uri": stored.uri},
    )
    if holder is not None:
        await db.execute(
            sql(
                "INSERT INTO artifact_holders (sha256, agent_id) VALUES (:sha, :agent) "
                "ON CONFLICT (sha256, agent_id) DO NOTHING"
            ),
            {"sha": stored.sha256, "agent": holder},
        )


async def forget_object(db: DbSession, store: ArtifactStore, sha256: str) -> bool:
    """Remove the ``artifacts`` row of bytes nothing refers to any more (a replaced
    session archive, an erased artifact), and then the bytes, under the digest's
    exclusive lock. System work. False when a link still names it (nothing removed).
    """
    if not await forget_row(db, sha256):
        return False
    await asyncio.to_thread(store.delete, sha256)
    return True


async def forget_row(db: DbSession, sha256: str) -> bool:
    """Remove the ``artifacts`` row of bytes nothing refers to any more, under the digest's
    exclusive lock, leaving the bytes (``drop_unregistered`` removes them once the
    transaction committed; the sweep, if that fails). False when a link still names it."""
    await lock_digest(db, sha256, exclusive=True)
    linked = await db.execute(
        sql("SELECT 1 FROM artifact_links WHERE sha256 = :sha LIMIT 1"), {"sha": sha256}
    )
    if linked.first() is not None:
        return False
    await db.execute(sql("DELETE FROM artifacts WHERE sha256 = :sha"), {"sha": sha256})
    return True


async def drop_unregistered(db: DbSession, store: ArtifactStore, sha256: str) -> bool:
    """Remove bytes no ``artifacts`` row names, under the digest's exclusive lock: bytes
    registered again meanwhile (the same bytes stored anew) stay. Whether they went."""
    await lock_digest(db, sha256, exclusive=True)
    named = await db.execute(sql("SELECT 1 FROM artifacts WHERE sha256 = :sha"), {"sha": sha256})
    if named.first() is not None:
        return False
    await asyncio.to_thread(store.delete, sha256)
    return True


async def put_artifact(
    store: ArtifactStore,
    sessionmaker: async_sessionmaker[DbSession],
    *,
    agent_id: str,
    session_id: str,
    name: str,
    data: bytes | None = None,
    chunks: Iterable[bytes] | None = None,
    mime_type: str = DEFAULT_MIME,
) -> ArtifactRef:
    """Store bytes (``data``, or ``chunks`` streamed without holding them) under ``name``.

    The iterable of chunks is consumed in a worker thread. Returns the reference the
    session can pass around (a claim check) in place of the bytes. The bytes are
    registered as the agent's by the system; the link is written acting for the agent,
    in the same transaction.
    """
    validate_name(name, new=True)
    mime_type = check_media_type(mime_type)
    if (data is None) == (chunks is None):
        raise TypeError("put_artifact takes exactly one of data= or chunks=")
    if data is not None:
        stored = await asyncio.to_thread(store.put_bytes, data)
    else:
        assert chunks is not None
        stored = await asyncio.to_thread(store.put_stream, chunks)
    async with sessionmaker.begin() as db:
        await register_object(db, store, stored, mime_type, holder=agent_id)
        async with acting_for(db, agent_id):
            await _link(
                db,
                agent_id=agent_id,
                session_id=session_id,
                name=name,
                sha256=stored.sha256,
                mime_type=mime_type,
            )
            # Read back as every read will serve it (the link's time too).
            row = (
                await db.execute(
                    sql(_REF_SELECT + "WHERE l.session_id = :sid AND l.name = :name"),
                    {"sid": session_id, "name": name},
                )
            ).one()
            # Counted while the link's row is locked: an upload of the same name at the
            # same time waits for this one's commit, so each is told its own version.
            replaced = await db.execute(
                sql(
                    "SELECT count(*) FROM events WHERE session_id = :sid "
                    "AND kind = ANY(:kinds) AND payload ->> 'name' = :name"
                ),
                {
                    "sid": session_id,
                    "kinds": event_kinds.stored_as(event_kinds.ARTIFACT_REPLACED),
                    "name": name,
                },
            )
            version = 1 + int(replaced.scalar_one())
    return dataclasses.replace(_ref(row), version=version)


async def _link(
    db: DbSession, *, agent_id: str, session_id: str, name: str, sha256: str, mime_type: str
) -> None:
    """Point ``name`` at ``sha256`` with the type given (the type is the link's: the same
    bytes may be linked under other names with other types)."""
    for _ in range(2):
        found = (
            await db.execute(
                sql(
                    "SELECT sha256, created_at, mime_type FROM artifact_links "
                    "WHERE session_id = :sid AND name = :name FOR UPDATE"
                ),
                {"sid": session_id, "name": name},
            )
        ).first()
        current = None if found is None else str(found[0])
        if current == sha256:
            if found is not None and found[2] != mime_type:  # same bytes, another type
                await db.execute(
                    sql(
                        "UPDATE artifact_links SET mime_type = :mime "
                        "WHERE session_id = :sid AND name = :name"
                    ),
                    {"sid": session_id, "name": name, "mime": mime_type},
                )
            return
        if found is not None:
            # The link and its event commit together, so the key only has to be unique
            # per version change: the replaced link's own timestamp makes it so.
            since = found[1].isoformat()
            await db.execute(
                sql(
                    "UPDATE artifact_links SET sha256 = :sha, mime_type = :mime, "
                    "created_at = now() WHERE session_id = :sid AND name = :name"
                ),
                {"sid": session_id, "name": name, "sha": sha256, "mime": mime_type},
            )
            await record_events(
                db,
                session_id,
                agent_id,
                [
                    NewEvent(
                        key=f"artifact.replaced:{current}:{sha256}:{since}:{name}",
                        kind=event_kinds.ARTIFACT_REPLACED,
                        actor=agent_id,
                        payload={"name": name, "previous_sha256": current, "sha256": sha256},
                    )
                ],
            )
            return
        inserted = (
            await db.execute(
                sql(
                    "INSERT INTO artifact_links (agent_id, session_id, name, sha256, mime_type) "
                    "VALUES (:agent, :sid, :name, :sha, :mime) "
                    "ON CONFLICT (session_id, name) DO NOTHING RETURNING id"
                ),
                {
                    "agent": agent_id,
                    "sid": session_id,
                    "name": name,
                    "sha": sha256,
                    "mime": mime_type,
                },
            )
        ).first()
        if inserted is not None:
            return
        # A concurrent writer linked the name first: treat its link as the current one.
    raise ArtifactError(f"could not link artifact {name!r} in session {session_id}")


_REF_SELECT = (
    # The type is the link's; a link from before it was kept reads its content's.
    "SELECT l.session_id, l.name, a.sha256, a.size, "
    "coalesce(l.mime_type, a.mime_type) AS mime_type, a.storage_uri, l.created_at "
    "FROM artifact_links l JOIN artifacts a ON a.sha256 = l.sha256 "
)


def _ref(row: object) -> ArtifactRef:
    return ref_from_mapping(row._mapping)  # type: ignore[attr-defined]


def ref_from_json(row: dict[str, Any]) -> ArtifactRef:
    """A reference read as JSON (``row_to_json`` of the columns ``session_artifacts``
    reads)."""
    at = row["created_at"]
    return ref_from_mapping({**row, "created_at": datetime.fromisoformat(at) if at else None})


def ref_from_mapping(m: Mapping[str, Any]) -> ArtifactRef:
    return ArtifactRef(
        session_id=m["session_id"],
        name=m["name"],
        sha256=m["sha256"],
        size=m["size"],
        mime_type=m["mime_type"],
        storage_uri=m["storage_uri"],
        created_at=m["created_at"],
    )


async def resolve_artifact(
    sessionmaker: async_sessionmaker[DbSession],
    *,
    agent_id: str,
    session_id: str | None = None,
    name: str | None = None,
    sha256: str | None = None,
) -> ArtifactRef:
    """Find an artifact the agent may read: by ``session_id`` + ``name``, or by ``sha256``
    (optionally within ``session_id``). Raises UnknownArtifact (an ArtifactNotFound)."""
    if name is not None:
        validate_name(name)
        if session_id is None:
            raise TypeError("looking an artifact up by name needs its session_id")
    elif sha256 is not None:
        check_sha(sha256)
    else:
        raise TypeError("resolve_artifact needs name= or sha256=")
    async with acting_for(sessionmaker, agent_id) as db:
        row = (
            await db.execute(
                sql(
                    _REF_SELECT + "WHERE (CAST(:sid AS text) IS NULL OR l.session_id = :sid) "
                    "AND (CAST(:name AS text) IS NULL OR l.name = :name) "
                    "AND (CAST(:sha AS text) IS NULL OR l.sha256 = :sha) "
                    "ORDER BY l.created_at DESC, l.id DESC LIMIT 1"
                ),
                {"sid": session_id, "name": name, "sha": sha256},
            )
        ).first()
    if row is None:
        what = f"{name!r} in session {session_id}" if name is not None else str(sha256)
        raise UnknownArtifact(what)
    return _ref(row)


async def list_artifacts(
    sessionmaker: async_sessionmaker[DbSession], *, agent_id: str, session_id: str
) -> list[ArtifactRef]:
    """The session's artifacts, by name."""
    async with acting_for(sessionmaker, agent_id) as db:
        return await session_artifacts(db, session_id)


async def session_artifacts(db: Statements, session_id: str) -> list[ArtifactRef]:
    """The session's artifacts, by name, in the caller's transaction (acting for its agent)."""
    rows = await db.execute(
        sql(_REF_SELECT + "WHERE l.session_id = :sid ORDER BY l.name"), {"sid": session_id}
    )
    return [_ref(r) for r in rows]


async def get_artifact(
    store: ArtifactStore,
    sessionmaker: async_sessionmaker[DbSession],
    *,
    agent_id: str,
    session_id: str | None = None,
    name: str | None = None,
    sha256: str | None = None,
) -> tuple[ArtifactRef, bytes]:
    """The reference and its bytes, verified against the sha256 (ArtifactCorrupt if not).

    For big artifacts use ``open_artifact``, which streams.
    """
    ref = await resolve_artifact(
        sessionmaker, agent_id=agent_id, session_id=session_id, name=name, sha256=sha256
    )
    data = await asyncio.to_thread(store.get_bytes, ref.sha256)
    return ref, data


async def open_artifact(
    store: ArtifactStore,
    sessionmaker: async_sessionmaker[DbSession],
    *,
    agent_id: str,
    session_id: str | None = None,
    name: str | None = None,
    sha256: str | None = None,
) -> tuple[ArtifactRef, AsyncIterator[bytes]]:
    """The reference and an async stream of its chunks; the stream raises
    ArtifactCorrupt at its end if the bytes do not hash to the reference."""
    ref = await resolve_artifact(
        sessionmaker, agent_id=agent_id, session_id=session_id, name=name, sha256=sha256
    )
    chunks = await asyncio.to_thread(store.open, ref.sha256)
    return ref, iterate_in_thread(chunks)


async def iterate_in_thread(items: Iterator[T]) -> AsyncIterator[T]:
    """Drive a blocking iterator from async code, one ``next`` per worker-thread hop."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, items, done)
            if item is done:
                return
            yield cast(T, item)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(close)
