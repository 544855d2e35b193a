"""The versions of an artifact's name: every digest the name has held in its session.

A name links to its latest bytes (``registry``); writing new bytes under it moves the link
and records an ``artifact_replaced`` event with both digests, in the append-only record.
The name's versions are read back from those events, oldest first (version 1 is the
first bytes written, the newest is the one the link holds), so bytes written over stay
reachable by the name and a version number, with no table of their own.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import ArtifactRef, resolve_artifact
from vigil.activities.artifacts.store import ArtifactNotFound
from vigil.activities.record.rls import acting_for
from vigil.activities.record.sql import sql
from vigil.activities.record.store import StoredEvent, list_events
from vigil.schema import event_kinds


class NoSuchVersion(ArtifactNotFound):
    """The name has fewer versions than the one asked for."""


async def _replacements(
    sessionmaker: async_sessionmaker[DbSession], agent_id: str, session_id: str
) -> list[StoredEvent]:
    async with acting_for(sessionmaker, agent_id) as db:
        return await list_events(db, session_id, kind=event_kinds.ARTIFACT_REPLACED)


def _digests(events: list[StoredEvent], name: str, current: str) -> list[str]:
    mine = [e.payload for e in events if e.payload.get("name") == name]
    digests = [str(mine[0]["previous_sha256"])] if mine else []
    digests.extend(str(p["sha256"]) for p in mine)
    if not digests or digests[-1] != current:  # a link written before events were kept
        digests.append(current)
    return digests


async def version_counts(
    sessionmaker: async_sessionmaker[DbSession], *, agent_id: str, session_id: str
) -> Counter[str]:
    """How many versions each name of the session has had (1 when never written over)."""
    counts: Counter[str] = Counter()
    for event in await _replacements(sessionmaker, agent_id, session_id):
        counts[str(event.payload.get("name"))] += 1
    return Counter({name: n + 1 for name, n in counts.items()})


async def resolve_version(
    sessionmaker: async_sessionmaker[DbSession],
    *,
    agent_id: str,
    session_id: str,
    name: str,
    version: int | None,
) -> ArtifactRef:
    """``name``'s ``version`` (1: its first bytes; None: its newest) in the session;
    NoSuchVersion past the newest, ArtifactNotFound when the session has no such name."""
    current = await resolve_artifact(
        sessionmaker, agent_id=agent_id, session_id=session_id, name=name
    )
    if version is None:
        return current
    async with acting_for(sessionmaker, agent_id) as db:
        replaced = await list_events(db, session_id, kind=event_kinds.ARTIFACT_REPLACED)
        # Asked after the events were read: an archive that took them before then is
        # seen here (each statement reads what committed before it).
        archived = await db.execute(
            sql("SELECT archive_uri FROM sessions WHERE id = :s"), {"s": session_id}
        )
        if archived.scalar_one_or_none() is not None:
            # Its events, which name the versions, are in the archive: version 1 read as
            # the newest bytes, labelled the first, until 2026-12-08.
            raise NoSuchVersion(
                f"session {session_id} is archived: the versions of {name!r} are named in "
                f"its archive, and only the newest is read until `vigil restore {session_id}`"
            )
    digests = _digests(replaced, name, current.sha256)
    if not 1 <= version <= len(digests):
        held = f"{len(digests)} version" + ("s" if len(digests) != 1 else "")
        raise NoSuchVersion(f"{name!r} has {held}; there is no version {version}")
    sha256 = digests[version - 1]
    if sha256 == current.sha256:
        return current
    async with acting_for(sessionmaker, agent_id) as db:
        row = (
            await db.execute(
                sql("SELECT size, mime_type, storage_uri FROM artifacts WHERE sha256 = :sha"),
                {"sha": sha256},
            )
        ).first()
    if row is None:  # erased since: the record keeps its digest, the bytes are gone
        raise ArtifactNotFound(f"version {version} of {name!r} is no longer stored")
    return ArtifactRef(
        session_id=session_id,
        name=name,
        sha256=sha256,
        size=row.size,
        mime_type=row.mime_type,
        storage_uri=row.storage_uri,
    )
