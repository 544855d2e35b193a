"""Archive a finished session to the object store, and restore it.

The archive is gzip-compressed JSON Lines::

    {"format": "vigil.session-archive", "version": 1, "session_id": ..., "columns": {...}}
    {"t": "sessions", "row": {...}}          the session row as it was
    {"t": "messages", "row": {...}}          one per message, by seq
    {"t": "events", "row": {...}}            one per event, by key
    {"t": "end", "messages": N, "events": M}

Each row is PostgreSQL's own ``to_jsonb`` of the stored row (generated columns left out),
so restoring it with ``jsonb_populate_recordset`` gives back identical rows: same id, seq,
stored text and flag, JSONB, and microsecond timestamps. The archive is deterministic
(no time in it, gzip mtime 0), so a retried archival produces the same sha256 and the
content-addressed store deduplicates it.

Order of archival: read a consistent snapshot into a local spooled file; put it in the
store (durable: fsync'd file or completed S3 upload); read it back and verify the
digest; then one transaction registers the object (an ``artifacts`` row, so the sweeper
keeps it), records ``sessions.archive_uri`` and ``metadata.archive``, and deletes the
hot messages and events, refusing if their number changed since the snapshot.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import (
    drop_unregistered,
    forget_object,
    forget_row,
    iterate_in_thread,
    register_object,
)
from vigil.activities.artifacts.store import (
    ArtifactStore,
    StoredObject,
    read_chunks,
)
from vigil.activities.record.lean import xact_lock
from vigil.activities.record.rls import record_maintenance
from vigil.activities.record.store import feed_hold_key
from vigil.schema.payloads import FINAL_STATUSES

log = logging.getLogger(__name__)

FINISHED_STATUSES = frozenset(s.value for s in FINAL_STATUSES)
ARCHIVE_FORMAT = "vigil.session-archive"
ARCHIVE_VERSION = 1
ARCHIVE_MIME = "application/x-ndjson+gzip"
_SPOOL_BYTES = 8 * 1024 * 1024
_BATCH_BYTES = 4 * 1024 * 1024
_ROW_LINE = re.compile(r'^\{"t": "(messages|events)", "row": (.*)\}$', re.DOTALL)
# Keyset order of each pruned table: an indexed, unique column within a session.
_ORDER = {"messages": "seq", "events": "key"}


class ArchiveError(Exception):
    """Base of archival failures."""


class SessionNotFound(ArchiveError):
    pass


class SessionNotFinished(ArchiveError):
    """Only a finished session may be archived; permanent for the call that asked."""


class ArchiveConflict(ArchiveError):
    """The hot rows changed under the archival or restore; nothing was pruned or written."""


class ArchiveInvalid(ArchiveError):
    """The archive read back is not a complete archive of this session."""


@dataclass(frozen=True)
class ArchiveResult:
    session_id: str
    sha256: str
    size: int
    uri: str
    messages: int
    events: int
    already_archived: bool = False
    pruned: bool = True
    """False for a copy: the hot rows stayed (``archive_session(prune=False)``)."""


@dataclass(frozen=True)
class RestoreResult:
    session_id: str
    messages: int
    events: int
    was_archived: bool = True
    """False when there was nothing to restore (already restored: a retry)."""


async def _columns(db: DbSession, table: str) -> list[str]:
    """Stored (not generated) columns of ``table``, in table order."""
    rows = await db.execute(
        text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = :t AND is_generated = 'NEVER' "
            "ORDER BY ordinal_position"
        ),
        {"t": table},
    )
    return [str(r[0]) for r in rows]


async def _generated(db: DbSession, table: str) -> list[str]:
    rows = await db.execute(
        text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = :t AND is_generated <> 'NEVER'"
        ),
        {"t": table},
    )
    return [str(r[0]) for r in rows]


async def _session_state(db: DbSession, session_id: str, *, lock: bool) -> Any:
    row = (
        (
            await db.execute(
                text(
                    "SELECT id, agent_id, status, archive_uri, metadata FROM sessions "
                    "WHERE id = :id" + (" FOR UPDATE" if lock else "")
                ),
                {"id": session_id},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise SessionNotFound(session_id)
    return row


def _check_finished(session_id: str, status: str) -> None:
    if status not in FINISHED_STATUSES:
        raise SessionNotFinished(
            f"session {session_id} is {status!r}: only a finished session "
            f"({', '.join(sorted(FINISHED_STATUSES))}) can be archived"
        )


async def _rows_of(
    db: DbSession, table: str, session_id: str, generated: list[str], page: int
) -> AsyncIterator[str]:
    """The session's rows of ``table`` as jsonb text, in keyset pages."""
    order = _ORDER[table]
    select = (
        f"SELECT {order} AS k, (to_jsonb(x) - CAST(:gen AS text[]))::text AS j "
        f"FROM {table} x WHERE session_id = :sid "
    )
    params: dict[str, Any] = {"gen": generated, "sid": session_id, "lim": page}
    rows = (await db.execute(text(select + f"ORDER BY {order} LIMIT :lim"), params)).all()
    while rows:
        for _, row_json in rows:
            yield str(row_json)
        params["after"] = rows[-1][0]
        rows = (
            await db.execute(
                text(select + f"AND {order} > :after ORDER BY {order} LIMIT :lim"), params
            )
        ).all()


async def _write_snapshot(
    sessionmaker: async_sessionmaker[DbSession], session_id: str, out: IO[bytes], page: int
) -> tuple[int, int]:
    """Write the archive of one consistent snapshot to ``out``; return the row counts."""
    counts = {"messages": 0, "events": 0}
    async with sessionmaker() as db:
        await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        state = await _session_state(db, session_id, lock=False)
        _check_finished(session_id, state["status"])
        if state["archive_uri"] is not None:
            raise ArchiveConflict(f"session {session_id} is already archived")
        columns = {t: await _columns(db, t) for t in ("messages", "events")}
        generated = {t: await _generated(db, t) for t in ("messages", "events")}
        session_json = (
            await db.execute(
                # Without the archive's own note, so a copy and a later prune of the
                # same rows give the same bytes.
                text(
                    "SELECT ((to_jsonb(s) - CAST(:gen AS text[])) || "
                    "jsonb_build_object('metadata', s.metadata - 'archive'))::text "
                    "FROM sessions s WHERE id = :id"
                ),
                {"id": session_id, "gen": await _generated(db, "sessions")},
            )
        ).scalar_one()
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
            header = {
                "format": ARCHIVE_FORMAT,
                "version": ARCHIVE_VERSION,
                "session_id": session_id,
                "columns": columns,
            }
            buffer = [
                json.dumps(header, sort_keys=True),
                f'{{"t": "sessions", "row": {session_json}}}',
            ]
            for table in ("messages", "events"):
                async for row_json in _rows_of(db, table, session_id, generated[table], page):
                    buffer.append(f'{{"t": "{table}", "row": {row_json}}}')
                    counts[table] += 1
                    if len(buffer) >= page:
                        await asyncio.to_thread(gz.write, ("\n".join(buffer) + "\n").encode())
                        buffer.clear()
            buffer.append(json.dumps({"t": "end", **counts}, sort_keys=True))
            await asyncio.to_thread(gz.write, ("\n".join(buffer) + "\n").encode())
        await db.rollback()
    return counts["messages"], counts["events"]


def _verify_object(store: ArtifactStore, sha256: str) -> None:
    for _ in store.open(sha256):  # raises ArtifactCorrupt at the end on a bad digest
        pass


async def archive_session(
    sessionmaker: async_sessionmaker[DbSession],
    store: ArtifactStore,
    session_id: str,
    *,
    prune: bool = True,
    page_size: int = 1000,
    verify: bool = True,
) -> ArchiveResult:
    """Archive a finished session and, with ``prune``, remove its hot messages and events.

    Without ``prune`` the archive is a copy: it is stored and noted in
    ``metadata.archive`` and the hot rows stay (``archive_uri`` stays NULL); archiving
    again replaces the copy, and the replaced object is deleted. Idempotent: archiving a
    pruned session returns its archive. Raises SessionNotFinished for a session that is
    still running (or waiting, or paused).
    """
    async with sessionmaker() as db:
        state = await _session_state(db, session_id, lock=False)
    if state["archive_uri"] is not None:
        return _existing(session_id, state)
    _check_finished(session_id, state["status"])

    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        n_messages, n_events = await _write_snapshot(sessionmaker, session_id, spool, page_size)
        spool.seek(0)
        stored: StoredObject = await asyncio.to_thread(
            store.put_stream, read_chunks(cast(BinaryIO, spool))
        )
    if verify:
        await asyncio.to_thread(_verify_object, store, stored.sha256)

    info = {
        "sha256": stored.sha256,
        "size": stored.size,
        "uri": stored.uri,
        "format": ARCHIVE_FORMAT,
        "version": ARCHIVE_VERSION,
        "messages": n_messages,
        "events": n_events,
        "pruned": prune,
    }
    async with sessionmaker() as db, db.begin():
        state = await _session_state(db, session_id, lock=True)
        if state["archive_uri"] is not None:
            return _existing(session_id, state)
        _check_finished(session_id, state["status"])
        await register_object(db, store, stored, ARCHIVE_MIME)
        if prune:
            # What the pruned events alone named (earlier versions of its artifacts, a
            # tool's claim-checked output): an erasure, and the release of the agent's
            # hold on them, find them here.
            info["artifacts"] = await _event_digests(db, session_id)
            await _prune(db, session_id, n_messages, n_events)
        await db.execute(
            text(
                "UPDATE sessions SET archive_uri = CASE WHEN :prune THEN :uri END, "
                "metadata = metadata || jsonb_build_object('archive', CAST(:info AS jsonb) || "
                "jsonb_build_object('archived_at', now())) WHERE id = :sid"
            ),
            {"uri": stored.uri, "info": json.dumps(info), "sid": session_id, "prune": prune},
        )
        previous = _archive_info(state).get("sha256")
        if isinstance(previous, str) and previous != stored.sha256:
            # An earlier copy of this session: nothing else refers to it.
            await forget_object(db, store, previous)
    return ArchiveResult(
        session_id,
        stored.sha256,
        stored.size,
        stored.uri,
        n_messages,
        n_events,
        pruned=prune,
    )


EVENT_DIGESTS = (
    "SELECT payload ->> 'previous_sha256' FROM events "
    "  WHERE session_id = ANY(:s) AND kind IN ('artifact_replaced', 'artifact.replaced') "
    "UNION SELECT payload ->> 'artifact_sha256' FROM events "
    "  WHERE session_id = ANY(:s) AND kind = 'tool_call' "
    "UNION SELECT jsonb_array_elements_text(metadata -> 'archive' -> 'artifacts') "
    "  FROM sessions WHERE id = ANY(:s) "
    "  AND jsonb_typeof(metadata -> 'archive' -> 'artifacts') = 'array'"
)
"""SQL: the artifacts the sessions ``:s`` name by their events only, pruned or not (an
earlier version of an artifact, a tool's output kept as one); the links name the rest."""


async def _event_digests(db: DbSession, session_id: str) -> list[str]:
    rows = await db.execute(text(EVENT_DIGESTS), {"s": [session_id]})
    return sorted(str(sha) for sha in rows.scalars() if sha)


async def _prune(db: DbSession, session_id: str, n_messages: int, n_events: int) -> None:
    await record_maintenance(db)  # pruning is one of the two removals of transcript rows
    deleted_messages = (
        await db.execute(text("DELETE FROM messages WHERE session_id = :sid"), {"sid": session_id})
    ).rowcount  # type: ignore[attr-defined]
    deleted_events = (
        await db.execute(text("DELETE FROM events WHERE session_id = :sid"), {"sid": session_id})
    ).rowcount  # type: ignore[attr-defined]
    if (deleted_messages, deleted_events) != (n_messages, n_events):
        raise ArchiveConflict(
            f"session {session_id} changed while it was archived "
            f"({deleted_messages}/{n_messages} messages, {deleted_events}/{n_events} "
            "events); nothing was pruned"
        )


def _archive_info(state: Any) -> dict[str, Any]:
    metadata = state["metadata"]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    info = (metadata or {}).get("archive") or {}
    return info if isinstance(info, dict) else {}


def _existing(session_id: str, state: Any) -> ArchiveResult:
    info = _archive_info(state)
    return ArchiveResult(
        session_id,
        str(info.get("sha256", "")),
        int(info.get("size", 0)),
        str(state["archive_uri"]),
        int(info.get("messages", 0)),
        int(info.get("events", 0)),
        already_archived=True,
    )


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Decompress a gzip stream incrementally and split it into lines."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    try:
        async for block in chunks:
            pending += inflater.decompress(block)
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode("utf-8")
        pending += inflater.flush()
        if pending:
            yield pending.decode("utf-8")
    except (zlib.error, UnicodeDecodeError) as exc:
        raise ArchiveInvalid(f"the archive is damaged: {exc}") from exc
    if not inflater.eof:
        raise ArchiveInvalid("the archive's gzip stream is truncated")


async def _insert_batch(db: DbSession, table: str, columns: list[str], rows: list[str]) -> None:
    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    await db.execute(
        text(
            f"INSERT INTO {table} ({cols}) SELECT {cols} "
            f"FROM jsonb_populate_recordset(NULL::{table}, CAST(:rows AS jsonb))"
        ),
        {"rows": "[" + ",".join(rows) + "]"},
    )


async def restore_session(
    sessionmaker: async_sessionmaker[DbSession],
    store: ArtifactStore,
    session_id: str,
    *,
    batch_size: int = 1000,
) -> RestoreResult:
    """Put an archived session's messages and events back, identical, and clear archive_uri.

    The archive is streamed and its sha256 verified; all inserts happen in one
    transaction that commits only if the digest, the header and the row counts agree.
    Restoring a session that is not archived returns ``was_archived=False``.
    """
    async with sessionmaker() as db, db.begin():
        state = await _session_state(db, session_id, lock=True)
        if state["archive_uri"] is None:
            return RestoreResult(session_id, 0, 0, was_archived=False)
        sha256 = _archive_info(state).get("sha256")
        if not isinstance(sha256, str):
            raise ArchiveInvalid(f"session {session_id} has an archive_uri but no archive sha256")
        for table in ("messages", "events"):
            present = (
                await db.execute(
                    text(f"SELECT count(*) FROM {table} WHERE session_id = :sid"),
                    {"sid": session_id},
                )
            ).scalar_one()
            if present:
                raise ArchiveConflict(
                    f"session {session_id} has {present} {table} rows again; not restoring"
                )
        # The agent's feed lock, as every write of its rows holds it: an agent's stream
        # catching up meanwhile waits for these rows (their ids are their old ones).
        await db.execute(text("SELECT " + xact_lock(feed_hold_key(state["agent_id"]), shared=True)))
        live_columns = {t: await _columns(db, t) for t in ("messages", "events")}
        counts = {"messages": 0, "events": 0}
        chunks: Iterator[bytes] = await asyncio.to_thread(store.open, sha256)
        header: dict[str, Any] | None = None
        trailer: dict[str, Any] | None = None
        batch: list[str] = []
        batch_table = ""
        batch_bytes = 0
        async for line in _lines(iterate_in_thread(chunks)):
            if not line:
                continue
            if header is None:
                header = _parse(line)
                _check_header(header, session_id, live_columns)
                continue
            match = _ROW_LINE.match(line)
            if match is None:
                record = _parse(line)
                if record.get("t") == "end":
                    trailer = record
                elif record.get("t") != "sessions":
                    raise ArchiveInvalid(f"unexpected archive line of type {record.get('t')!r}")
                continue
            if trailer is not None:
                raise ArchiveInvalid("rows after the end of the archive")
            table, row_json = match.group(1), match.group(2)
            if batch and (
                table != batch_table or len(batch) >= batch_size or batch_bytes >= _BATCH_BYTES
            ):
                await _insert_batch(db, batch_table, header["columns"][batch_table], batch)
                batch, batch_bytes = [], 0
            batch_table = table
            batch.append(row_json)
            batch_bytes += len(row_json)
            counts[table] += 1
        if batch:
            assert header is not None
            await _insert_batch(db, batch_table, header["columns"][batch_table], batch)
        if header is None or trailer is None:
            raise ArchiveInvalid("the archive is incomplete (no header or no end line)")
        if (trailer.get("messages"), trailer.get("events")) != (
            counts["messages"],
            counts["events"],
        ):
            raise ArchiveInvalid(f"the archive holds {counts}, its end line says {trailer}")
        await db.execute(
            text(
                "UPDATE sessions SET archive_uri = NULL, metadata = metadata - 'archive' "
                "WHERE id = :sid"
            ),
            {"sid": session_id},
        )
        # The archive's row goes with the session's name for it: nothing then refers to
        # its bytes (kept with the row until 2026-12-08 when removing them failed, for
        # good: the sweep keeps registered bytes, and an erasure finds archives through
        # the session).
        forgotten = await forget_row(db, sha256)
    # The rows are back and committed; the bytes are removed only now, so a failed
    # restore never loses them. Bytes that cannot be removed now (the store down, or
    # refusing, or the database gone meanwhile) are an orphan object, which the next sweep
    # removes: the restore is done all the same.
    if forgotten:
        try:
            async with sessionmaker() as db, db.begin():
                await drop_unregistered(db, store, sha256)
        except Exception as exc:  # restored and committed: said, not raised
            log.warning(
                "session %s restored; its archive %s stays until the next sweep: %s",
                session_id,
                sha256,
                exc,
            )
    return RestoreResult(session_id, counts["messages"], counts["events"])


def _parse(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ArchiveInvalid(f"the archive holds a line that is not JSON: {exc}") from exc


def _check_header(header: Any, session_id: str, live: dict[str, list[str]]) -> None:
    if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
        raise ArchiveInvalid("not a vigil session archive")
    if header.get("version") != ARCHIVE_VERSION:
        raise ArchiveInvalid(f"unsupported archive version {header.get('version')!r}")
    if header.get("session_id") != session_id:
        raise ArchiveInvalid(
            f"the archive is of session {header.get('session_id')!r}, not {session_id!r}"
        )
    for table, columns in (header.get("columns") or {}).items():
        unknown = set(columns) - set(live.get(table, []))
        if table not in live or unknown:
            raise ArchiveInvalid(f"archive columns of {table} unknown here: {sorted(unknown)}")
