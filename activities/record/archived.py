"""What a session's record says of its archived transcript, for the faces that read it.

An archival with ``prune`` moves the session's messages and events to the object store
and notes it in ``metadata.archive`` (see ``archive.py``); a read of the session then finds
no transcript, and must say where it went rather than look like lost data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ArchivedTranscript:
    """A session's messages and events, moved to the object store (restorable)."""

    uri: str
    """The archive object (gzip JSON Lines)."""
    archived_at: datetime | None
    messages: int
    events: int

    def shown(self, session_id: str) -> dict[str, Any]:
        """As the faces' JSON gives it: these fields and the command that restores it."""
        return {**asdict(self), "restore": restore_hint(session_id)}


def archived_transcript(metadata: Mapping[str, Any] | None) -> ArchivedTranscript | None:
    """The archived transcript a session's metadata notes; None when its transcript is in
    the record (never archived, archived as a copy, or restored)."""
    info = (metadata or {}).get("archive")
    # Archives made before copies existed have no "pruned": they were all moves.
    if not isinstance(info, Mapping) or info.get("pruned", True) is False:
        return None
    at: datetime | None = None
    raw_at = info.get("archived_at")
    if isinstance(raw_at, str):
        try:
            at = datetime.fromisoformat(raw_at)
        except ValueError:
            at = None
    return ArchivedTranscript(
        uri=str(info.get("uri") or "?"),
        archived_at=at,
        messages=_count(info.get("messages")),
        events=_count(info.get("events")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def restore_hint(session_id: str) -> str:
    """The command that brings an archived transcript back."""
    return f"vigil restore {session_id}"
