"""The row types of long-term memory and the limits on their fields: what
``MemoryStore.add`` did (``AddResult``), one stored memory, live, superseded or forgotten
(``MemoryRecord``), what ``MemoryStore.forget`` did (``Forgotten``) and one recalled
memory with its score and ranks (``Recalled``), with the conversions from the rows the
store's statements return (``memories`` and ``memory_writes`` rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from vigil.schema import textcodec
from vigil.schema.payloads import MAX_HUMAN_TEXT

AddAction = Literal["inserted", "merged", "superseded"]
RecallMode = Literal["hybrid", "vector", "text"]

MAX_KIND = 32
MAX_CONTENT = MAX_HUMAN_TEXT
"""The most characters a memory holds, whoever writes it (the API's limit of a human's
text; the ``remember`` tool asks less of the model)."""
MAX_SUBJECT = 1000
MAX_SUBJECT_BYTES = 2000
"""A subject's most bytes in UTF-8, and its key's: the key is indexed with the agent and
kind, and a B-tree entry holds at most 2,704 bytes."""


@dataclass(frozen=True)
class AddResult:
    """What ``MemoryStore.add`` did."""

    id: int
    """The new memory, or the existing one a near-duplicate was merged into."""
    action: AddAction
    superseded_ids: tuple[int, ...] = ()
    """For ``superseded``: the live memories about the same subject that the new one replaced."""
    similarity: float | None = None
    """For ``merged``: cosine similarity to the memory merged into; for ``superseded``,
    to the near-duplicate whose words the new memory replaced (None: by subject alone)."""
    redactions: dict[str, int] = field(default_factory=dict)
    """Findings replaced before storage, per kind (empty when redaction is off)."""

    def said(self, whose: str = "") -> str:
        """What was done, for a person or the model: ``memory 8 added{whose}, superseding
        5 (the same subject)`` (or ``(a near-duplicate in other words)``) or ``merged into
        memory 8{whose} (a near-duplicate)``."""
        if self.action == "merged":
            return f"merged into memory {self.id}{whose} (a near-duplicate)"
        said = f"memory {self.id} added{whose}"
        if self.superseded_ids:
            older = ", ".join(str(i) for i in self.superseded_ids)
            if self.similarity is None:
                why = "the same subject"
            elif len(self.superseded_ids) == 1:
                why = "a near-duplicate in other words"
            else:
                why = "the same subject, one a near-duplicate in other words"
            said += f", superseding {older} ({why})"
        return said


@dataclass(frozen=True)
class MemoryRecord:
    """One stored memory, live or superseded."""

    id: int
    agent_id: str
    kind: str
    subject: str | None
    content: str
    importance: float
    dim: int
    source_session_id: str | None
    superseded_by: int | None
    superseded_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    forgotten_at: datetime | None = None
    """When a person forgot it (it is kept, and never recalled again)."""
    forgotten_by: str | None = None
    forget_reason: str | None = None
    embedder: str = ""
    """Name of the embedder that produced its vector."""
    embedder_version: str = ""

    @property
    def superseded(self) -> bool:
        return self.superseded_by is not None

    @property
    def forgotten(self) -> bool:
        return self.forgotten_at is not None


@dataclass(frozen=True)
class Forgotten:
    """What ``MemoryStore.forget`` did."""

    record: MemoryRecord
    """The memory as it is now (forgotten)."""
    now: bool
    """Forgotten by this call; false when it had been forgotten before."""
    restored_ids: tuple[int, ...] = ()
    """The memories it had superseded that are current again."""


@dataclass(frozen=True)
class Recalled:
    """One recalled memory with its score and how each search ranked it."""

    id: int
    kind: str
    subject: str | None
    content: str
    importance: float
    created_at: datetime
    score: float
    """Fused relevance x recency factor x importance factor; higher is better."""
    superseded: bool
    vector_rank: int | None
    """1-based rank among the vector candidates, None when not among them."""
    text_rank: int | None
    """1-based rank among the full-text candidates, None when not among them."""
    similarity: float | None = None
    """Cosine similarity to the query, when the memory was a vector candidate."""


def _record(row: Any) -> MemoryRecord:
    return MemoryRecord(
        id=row.id,
        agent_id=row.agent_id,
        kind=row.kind,
        subject=row.subject,
        content=row.content,
        importance=row.importance,
        dim=row.dim,
        source_session_id=row.source_session_id,
        superseded_by=row.superseded_by,
        superseded_at=row.superseded_at,
        metadata=textcodec.decode_json(row.metadata),
        created_at=row.created_at,
        forgotten_at=row.forgotten_at,
        forgotten_by=row.forgotten_by,
        forget_reason=row.forget_reason,
        embedder=row.embedder,
        embedder_version=row.embedder_version,
    )


def _add_result(row: Any) -> AddResult:
    """A keyed write's recorded result (a ``memory_writes`` row)."""
    return AddResult(
        id=row["memory_id"],
        action=row["action"],
        superseded_ids=tuple(row["superseded_ids"] or ()),
        similarity=row["similarity"],
    )
