"""Handing on an erased session's memory that other writers merged their words into.

A near-duplicate write merges into the memory it repeats, as a note in that memory's
metadata (``merges``: the words, their session, time and importance). When the session
that wrote the memory is erased, the memory is not deleted with it if others' notes are
in it: the newest of those notes becomes the memory, with a vector of its words, under a
new id (a worker's recall cache keeps what it recalled by id, and a new id is never
taken for the old words), the other notes still merged into it. Its keyed writes and the
memories it superseded follow it to the new id.

The vectors are made before the erasure's transaction (``texts``, then the embedder),
so no embedder call holds its locks; a memory whose words changed meanwhile, or that no
vector was made for, is deleted instead, and counted. ``strip_notes`` takes the session's
own notes out of the agent's other memories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

MERGED_FROM = (
    "jsonb_typeof(metadata -> 'merges') = 'array' "
    "AND EXISTS (SELECT 1 FROM jsonb_array_elements(metadata -> 'merges') e "
    "            WHERE e ->> 'source_session_id' = :s)"
)
"""SQL: the memory holds a merge note of session ``:s``."""


@dataclass(frozen=True)
class Embedded:
    """An embedder's identity and the vectors it made (their pgvector literals) of the
    words memories would be handed on with."""

    embedder: str
    version: str
    dim: int
    vectors: dict[str, str]
    """Words -> their vector's literal."""

    def same_space(self, row: Any) -> bool:
        return (row.embedder, row.embedder_version, row.dim) == (
            self.embedder, self.version, self.dim,
        )  # fmt: skip


@dataclass(frozen=True)
class HandedOn:
    """What handing on did: memories handed on, and memories deleted although others'
    notes were in them (forgotten, or no vector of the later words could be made)."""

    handed: dict[int, int]
    """Old id -> new id."""
    lost: int


def notes_of_others(metadata: Any, session_id: str) -> list[dict[str, Any]]:
    """The merge notes in a memory's metadata that other writers left (not ``session_id``)."""
    notes = metadata.get("merges") if isinstance(metadata, dict) else None
    if not isinstance(notes, list):
        return []
    return [
        n for n in notes
        if isinstance(n, dict) and isinstance(n.get("content"), str)
        and n.get("source_session_id") != session_id
    ]  # fmt: skip


_CANDIDATES = (
    "SELECT id, forgotten_at IS NULL AS live, embedder, embedder_version, dim, metadata "
    "FROM memories WHERE source_session_id = :s "
    "AND jsonb_typeof(metadata -> 'merges') = 'array' ORDER BY id"
)


async def texts(db: DbSession, session_id: str) -> list[tuple[Any, str]]:
    """Each live memory of the session that others merged into (its row: embedder,
    version, dim) and the words it would be handed on with; read without a lock."""
    rows = await db.execute(text(_CANDIDATES), {"s": session_id})
    out: list[tuple[Any, str]] = []
    for row in rows:
        notes = notes_of_others(row.metadata, session_id)
        if notes and row.live:
            out.append((row, notes[-1]["content"]))
    return out


async def hand_on(db: DbSession, session_id: str, embedded: Embedded | None) -> HandedOn:
    """In the erasure's transaction: copy each of the session's memories that others merged
    into to a new row made of the newest other note, move its keyed writes and the
    memories it superseded to it. The old rows stay for the caller to delete."""
    rows = await db.execute(text(_CANDIDATES + " FOR UPDATE"), {"s": session_id})
    handed: dict[int, int] = {}
    lost = 0
    for row in rows.all():
        notes = notes_of_others(row.metadata, session_id)
        if not notes:
            continue
        if not row.live:
            lost += 1  # a forgotten memory goes, with what was merged into it
            continue
        words = notes[-1]["content"]
        vector = embedded.vectors.get(words) if embedded and embedded.same_space(row) else None
        if vector is None:
            lost += 1
            continue
        new_id = (
            await db.execute(_COPY, {**_handed_on(notes), "id": row.id, "vector": vector})
        ).scalar_one()
        await db.execute(_FOLLOW, {"old": row.id, "new": new_id})
        handed[int(row.id)] = int(new_id)
    return HandedOn(handed, lost)


async def strip_notes(db: DbSession, session_id: str, agent_id: str | None) -> int:
    """Take the session's merge notes out of the agent's other memories (locked first, so
    a merge committed meanwhile is kept), and the count of merges with them; the importance
    they raised a memory to falls back to the largest of its own (kept at its first merge)
    and the notes left, where its log of merges is whole. How many notes went."""
    rows = await db.execute(
        text(
            "SELECT id, importance, metadata FROM memories "
            "WHERE (CAST(:a AS text) IS NULL OR agent_id = :a) AND " + MERGED_FROM + " "
            "ORDER BY id FOR UPDATE"
        ),
        {"s": session_id, "a": agent_id},
    )
    gone_in_all = 0
    for row in rows.all():
        metadata = dict(row.metadata)
        notes = metadata["merges"]
        kept = [
            n for n in notes
            if not (isinstance(n, dict) and n.get("source_session_id") == session_id)
        ]  # fmt: skip
        gone = len(notes) - len(kept)
        count = metadata.get("merge_count")
        importance = float(row.importance)
        own = metadata.get("own_importance")
        if isinstance(own, int | float) and count == len(notes):
            importance = max([float(own), *(i for i in map(_importance, kept) if i is not None)])
        metadata["merges"] = kept
        if isinstance(count, int):
            metadata["merge_count"] = max(count - gone, 0)
        await db.execute(
            _STRIP,
            {"id": row.id, "metadata": json.dumps(metadata), "importance": importance},
        )
        gone_in_all += gone
    return gone_in_all


def _importance(note: Any) -> float | None:
    """A merge note's importance (None: it gives none)."""
    value = note.get("importance") if isinstance(note, dict) else None
    return float(value) if isinstance(value, int | float) else None


_STRIP = text(
    "UPDATE memories SET metadata = CAST(:metadata AS jsonb), importance = :importance "
    "WHERE id = :id"
)


def _handed_on(notes: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest note of another writer (its words, session, time and metadata), with
    the other notes still merged into it."""
    newest, earlier = notes[-1], notes[:-1]
    extra = newest.get("metadata")
    metadata: dict[str, Any] = dict(extra) if isinstance(extra, dict) else {}
    importances = [i for i in map(_importance, notes) if i is not None]
    if earlier:
        metadata["merges"] = earlier
        metadata["merge_count"] = len(earlier)
        if (own := _importance(newest)) is not None:
            metadata["own_importance"] = own
    return {
        "content": newest["content"],
        "source_session_id": newest.get("source_session_id"),
        "created_at": _when(newest.get("at")),
        "importance": max(importances, default=0.5),
        "metadata": json.dumps(metadata),
    }


def _when(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


_COPY = text(
    "INSERT INTO memories (agent_id, kind, subject, subject_key, content, importance, dim, "
    "  embedding, source_session_id, superseded_by, superseded_at, metadata, created_at, "
    "  embedder, embedder_version) "
    "SELECT agent_id, kind, subject, subject_key, :content, :importance, dim, "
    "  CAST(:vector AS vector), "
    "  :source_session_id, superseded_by, superseded_at, "
    "  CAST(:metadata AS jsonb) || jsonb_build_object('embedder', embedder), "
    "  coalesce(CAST(:created_at AS timestamptz), created_at), embedder, embedder_version "
    "FROM memories WHERE id = :id RETURNING id"
)
_FOLLOW = text(
    "WITH writes AS (UPDATE memory_writes SET memory_id = :new WHERE memory_id = :old) "
    "UPDATE memories SET superseded_by = :new WHERE superseded_by = :old"
)
