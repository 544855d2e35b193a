"""Find (and on request remove) what the object store and the ``artifacts`` table disagree on.

* Orphan objects: bytes in the store with no ``artifacts`` row, older than a grace
  period. They come from a put whose row was never committed (a crash or a failed
  transaction between the two steps). Young ones are left alone: their row may be
  about to commit.
* Missing objects: rows of this store whose bytes are gone. Never repaired here, only
  reported: that is data loss to investigate.
* Stale temporaries: half-written uploads the store left in its ``tmp`` area.

Both sides are walked in sha256 order and merged, so memory grows with the number of
candidates found, not with the number of objects. Every candidate is checked again on
its own before it is reported; an orphan is deleted under the digest's exclusive
advisory lock after checking, in that same transaction, that no row has appeared (see
``registry``).
Nothing is deleted unless ``dry_run=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import iterate_in_thread, lock_digest
from vigil.activities.artifacts.store import (
    ArtifactError,
    ArtifactStore,
    FilesystemStore,
    check_sha,
)

DEFAULT_GRACE = timedelta(hours=24)
_PAGE = 1000
_SAMPLE = "0" * 64


class SweepError(ArtifactError):
    """The sweep could not proceed safely (nothing was deleted after the error)."""


@dataclass(frozen=True)
class ListedObject:
    sha256: str
    modified: datetime | None
    """None when the backend could not say: such an object is never deleted."""


@dataclass
class SweepReport:
    dry_run: bool
    objects_seen: int = 0
    rows_seen: int = 0
    orphan_objects: list[str] = field(default_factory=list)
    """Objects without a row, older than the grace period (deleted unless dry_run)."""
    young_orphans: list[str] = field(default_factory=list)
    """Objects without a row still inside the grace period (left alone)."""
    missing_objects: list[str] = field(default_factory=list)
    """Rows of this store whose object is missing."""
    stale_temporaries: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Digests (and temporary names) actually deleted."""

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{self.objects_seen} objects, {self.rows_seen} rows; "
            f"{len(self.orphan_objects)} orphan objects, {len(self.young_orphans)} young, "
            f"{len(self.missing_objects)} rows missing their object, "
            f"{len(self.stale_temporaries)} stale temporaries; {verb} "
            f"{len(self.removed) if not self.dry_run else len(self.orphan_objects)}"
        )


def _listing(store: ArtifactStore) -> Iterator[ListedObject]:
    """The store's objects in ascending sha256 order, with their modification time."""
    if isinstance(store, FilesystemStore):
        yield from _fs_listing(store)
        return
    from vigil.activities.artifacts.s3 import S3Store

    if isinstance(store, S3Store):
        # S3 lists keys in UTF-8 binary order; sha256/aa/bb/<digest> sorts by digest.
        for obj in store.listing("sha256/"):
            name = (obj.object_name or "").rsplit("/", 1)[-1]
            with contextlib.suppress(ArtifactError):
                if obj.object_name == store.key_for(name):
                    yield ListedObject(name, obj.last_modified)
        return
    for sha in sorted(store.list_digests()):  # an unknown backend: no ages, no deletes
        yield ListedObject(sha, None)


def _fs_listing(store: FilesystemStore) -> Iterator[ListedObject]:
    def sorted_dirs(path: Path) -> list[Path]:
        return sorted((p for p in path.iterdir() if p.is_dir()), key=lambda p: p.name)

    for first in sorted_dirs(store.objects):
        for second in sorted_dirs(first):
            for entry in sorted(second.iterdir(), key=lambda p: p.name):
                try:
                    if store.path_for(entry.name) != entry:
                        continue
                    stat = entry.stat()
                except (ArtifactError, FileNotFoundError):
                    continue
                yield ListedObject(entry.name, datetime.fromtimestamp(stat.st_mtime, UTC))


def _temporaries(store: ArtifactStore) -> Iterator[tuple[str, datetime | None]]:
    if isinstance(store, FilesystemStore):
        for entry in store.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                yield entry.name, datetime.fromtimestamp(entry.stat().st_mtime, UTC)
        return
    from vigil.activities.artifacts.s3 import S3Store

    if isinstance(store, S3Store):
        for obj in store.listing("tmp/"):
            if obj.object_name:
                yield obj.object_name, obj.last_modified


def _remove_temporary(store: ArtifactStore, name: str) -> None:
    if isinstance(store, FilesystemStore):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.tmp / Path(name).name)
        return
    from vigil.activities.artifacts.s3 import S3Store

    if isinstance(store, S3Store) and name.startswith("tmp/"):
        store.remove_key(name)


def store_uri_prefix(store: ArtifactStore) -> str:
    """The common start of every storage_uri this store hands out."""
    uri: str = store.uri(_SAMPLE)  # type: ignore[attr-defined]
    return uri[: uri.index("00/00/" + _SAMPLE)]


async def _rows(
    sessionmaker: async_sessionmaker[DbSession],
) -> AsyncIterator[tuple[str, str]]:
    after = ""
    while True:
        async with sessionmaker() as db:
            rows = (
                await db.execute(
                    text(
                        "SELECT sha256, storage_uri FROM artifacts WHERE sha256 > :after "
                        "ORDER BY sha256 LIMIT :lim"
                    ),
                    {"after": after, "lim": _PAGE},
                )
            ).all()
        if not rows:
            return
        for sha, uri in rows:
            yield str(sha), str(uri)
        after = str(rows[-1][0])


async def _row_exists(db: DbSession, sha256: str) -> bool:
    found = await db.execute(text("SELECT 1 FROM artifacts WHERE sha256 = :sha"), {"sha": sha256})
    return found.first() is not None


async def sweep_artifacts(
    store: ArtifactStore,
    sessionmaker: async_sessionmaker[DbSession],
    *,
    grace: timedelta = DEFAULT_GRACE,
    dry_run: bool = True,
    now: datetime | None = None,
) -> SweepReport:
    """Compare the store with the ``artifacts`` table; remove orphans only if not dry_run.

    Runs as the tables' owner (system work, no row-level security).
    """
    report = SweepReport(dry_run=dry_run)
    cutoff = (now or datetime.now(UTC)) - grace
    prefix = store_uri_prefix(store)
    objects = iterate_in_thread(_listing(store))
    rows = _rows(sessionmaker)
    obj = await anext(objects, None)
    row = await anext(rows, None)
    last_obj = ""
    orphans: list[ListedObject] = []
    missing: list[str] = []
    while obj is not None or row is not None:
        if obj is not None and obj.sha256 < last_obj:
            raise SweepError("the store did not list its objects in sha256 order")
        if row is None or (obj is not None and obj.sha256 < row[0]):
            assert obj is not None
            report.objects_seen += 1
            orphans.append(obj)
            last_obj = obj.sha256
            obj = await anext(objects, None)
        elif obj is None or row[0] < obj.sha256:
            report.rows_seen += 1
            if row[1].startswith(prefix):
                missing.append(row[0])
            row = await anext(rows, None)
        else:
            report.objects_seen += 1
            report.rows_seen += 1
            last_obj = obj.sha256
            obj = await anext(objects, None)
            row = await anext(rows, None)

    # Candidates from a moving listing: confirm each one on its own.
    for sha in missing:
        if not await asyncio.to_thread(store.exists, sha):
            report.missing_objects.append(sha)
    for orphan in orphans:
        async with sessionmaker() as db, db.begin():
            if await _row_exists(db, orphan.sha256):
                continue
        if orphan.modified is None or orphan.modified > cutoff:
            report.young_orphans.append(orphan.sha256)
            continue
        report.orphan_objects.append(orphan.sha256)
        if not dry_run and await _delete_orphan(store, sessionmaker, orphan.sha256):
            report.removed.append(orphan.sha256)

    for name, modified in await asyncio.to_thread(lambda: list(_temporaries(store))):
        if modified is not None and modified <= cutoff:
            report.stale_temporaries.append(name)
            if not dry_run:
                await asyncio.to_thread(_remove_temporary, store, name)
                report.removed.append(name)
    return report


async def _delete_orphan(
    store: ArtifactStore, sessionmaker: async_sessionmaker[DbSession], sha256: str
) -> bool:
    check_sha(sha256)
    async with sessionmaker() as db, db.begin():
        # Exclusive: waits for any put that is registering these bytes right now.
        await lock_digest(db, sha256, exclusive=True)
        if await _row_exists(db, sha256):
            return False
        await asyncio.to_thread(store.delete, sha256)
    return True
