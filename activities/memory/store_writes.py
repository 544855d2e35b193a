"""The memory store's writes and its reads by id and subject: ``add`` (optional
redaction, embedding, near-duplicate merge, supersede on the same subject, insert, in one
transaction under an advisory lock per agent and kind, idempotent under a key),
``forget``, ``get``, ``live_ids`` and ``history``, running the statements of ``writes``.
A layer of ``MemoryStore`` (``activities.memory.store``).
"""

from __future__ import annotations

import math
import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

from vigil.activities.memory.provenance import EmbedderIdentity, identity_of, require_for_write
from vigil.activities.memory.records import (
    MAX_CONTENT,
    MAX_KIND,
    MAX_SUBJECT,
    MAX_SUBJECT_BYTES,
    AddResult,
    Forgotten,
    MemoryRecord,
    _add_result,
    _record,
)
from vigil.activities.memory.redact import marked
from vigil.activities.memory.redact import redact as redact_text
from vigil.activities.memory.search import _LIVE_IDS
from vigil.activities.memory.store_vector import _VectorRecall
from vigil.activities.memory.values import (
    UnstorableText,
    _aware,
    _check_text,
    _normal_subject,
    _vector_literal,
    subject_key,
    words_of,
)
from vigil.activities.memory.writes import (
    _BEFORE_A_SUBJECT_WRITE,
    _FOR_MERGE,
    _FORGET,
    _GET,
    _HISTORY,
    _INSERT,
    _MERGE,
    _NO_SUBJECT,
    DEDUPE_CANDIDATES,
    _written,
    lock_kind,
)
from vigil.activities.record.lean import memory_lock
from vigil.activities.record.rls import acting_for, bound_acting_for, lean_acting_for
from vigil.activities.record.store import from_jsonb
from vigil.schema import textcodec

MERGE_LOG_LIMIT = 20
"""How many merges are kept in a memory's metadata (the count keeps going)."""
RESERVED_METADATA = ("embedder", "merges", "merge_count", "own_importance", "redactions")


def _kept_subject(subject: str | None) -> str | None:
    """``subject`` as it is kept (``_normal_subject``); UnstorableText when it is longer
    than a subject may be, in characters or in bytes: the input's error, whoever wrote it
    (a model's `remember` is told why)."""
    given = len(subject) if subject is not None else 0
    subject = _normal_subject(subject)
    if subject is None:
        return None
    if len(subject) > MAX_SUBJECT:
        grew = (
            f" ({len(subject)} once normalised to NFKC, {given} as given)"
            if given <= MAX_SUBJECT
            else ""
        )
        raise UnstorableText(f"subject exceeds the limit of {MAX_SUBJECT} characters{grew}")
    size = len(subject.encode("utf-8", "surrogatepass"))
    key_size = len(subject_key(subject).encode("utf-8", "surrogatepass"))
    if max(size, key_size) > MAX_SUBJECT_BYTES:
        # The subject's key is indexed, and an index entry holds at most ~2.7 kB.
        raise UnstorableText(
            f"subject of {size} bytes in UTF-8 exceeds the limit of {MAX_SUBJECT_BYTES} "
            "bytes (its characters beyond ASCII take 2-4 bytes each)"
        )
    return subject


class _MemoryWrites(_VectorRecall):
    """Writing, forgetting and reading memories by id and subject (a layer of MemoryStore)."""

    # -----------------------------------------------------------------------------------
    # Write

    async def add(
        self,
        agent_id: str,
        content: str,
        *,
        kind: str = "fact",
        subject: str | None = None,
        importance: float = 0.5,
        source_session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
        key: str | None = None,
        first_attempt: bool = False,
    ) -> AddResult:
        """Remember ``content``: merge it into a near-duplicate, supersede the live memory
        about the same ``subject``, or insert it.

        A merge keeps the existing memory, raises its importance to the larger of the two
        and logs the merge in its metadata. A supersede keeps the old memory (marked
        ``superseded_by``), so ``history`` and ``include_superseded`` still find it.
        ``created_at`` backdates a memory (imports, tests); it defaults to now.
        ``key`` makes the write idempotent (a tool call's or a session outcome's key): a
        second ``add`` with the agent's same key stores nothing and returns the first
        result, which a retried activity needs after a worker died mid-way: it looks for
        the key before it embeds, so a retry answers even while the embedder is down.
        ``first_attempt``: the caller's try is likely the key's first (an activity's first
        attempt), so the key is looked for only under the write's lock, in its
        transaction, one round trip fewer; an earlier write is still found there, after
        the embedding, or right after an embedding that failed. Raises ``ValueError`` for
        invalid arguments (see the module docstring on text).
        """
        self._check_agent(agent_id)
        if not kind or len(kind) > MAX_KIND:
            raise ValueError(f"kind must be 1..{MAX_KIND} characters")
        if len(content) > MAX_CONTENT:
            raise ValueError(
                f"content of {len(content)} characters exceeds the limit of {MAX_CONTENT}"
            )
        subject = _kept_subject(subject)
        if not (math.isfinite(importance) and 0.0 <= importance <= 1.0):
            raise ValueError("importance must be between 0 and 1")
        _aware(created_at, "created_at")
        for value, what in ((content, "content"), (subject, "subject"), (kind, "kind")):
            if value is not None:
                _check_text(value, what)
        counts: dict[str, int] = {}
        if self.redact:
            done = redact_text(content)
            content = done.text
            counts = dict(done.counts)
            if subject is not None:
                subject_done = redact_text(subject)
                subject = subject_done.text
                for name, n in subject_done.counts.items():
                    counts[name] = counts.get(name, 0) + n
        if not _visible(content):
            raise ValueError("memory content is empty")
        # A subject holding a redaction's mark no longer tells whom it is about (two
        # people's addresses both read "[redacted:email]", and a subject can be typed that
        # way): it neither supersedes nor merges into the memories under it.
        unknown_subject = subject is not None and marked(subject)
        extra = metadata or {}
        clash = [key for key in RESERVED_METADATA if key in extra]
        if clash:
            raise ValueError(f"metadata keys {clash} are reserved for the memory store")

        # A retry finds its first result without embedding again (one round trip).
        if not first_attempt and (first := await self._written_before(agent_id, key)):
            return first

        # The embedding may be an HTTP call: made before the transaction holds any lock.
        try:
            [vector] = await self.embedder.embed([content])
        except Exception:
            # A first attempt may still follow an earlier write (a local activity run
            # again after its workflow task was lost): that write is the answer.
            if first_attempt and (first := await self._written_before(agent_id, key)):
                return first
            raise
        literal = _vector_literal(vector, self.embedder.dim)
        dim = self.embedder.dim
        identity = identity_of(self.embedder)
        now = datetime.now(UTC)

        # A lean transaction (``record.lean``): the write's statements straight on the
        # driver connection, as the session step's are.
        # The agent's role and the lock on its memories of this kind ride with BEGIN.
        lock = memory_lock(agent_id, kind)
        params: dict[str, Any] = {
            "agent_id": agent_id,
            "kind": kind,
            "subject": subject,
            "subject_key": subject_key(subject) if subject is not None else None,
            "content": content,
            "vector": literal,
            "dim": dim,
            "embedder": identity.name,
            "version": identity.version,
        }
        async with lean_acting_for(self._engine, agent_id, lock=lock) as db:
            best: tuple[int, float] | None = None
            old_ids: list[int] = []
            if subject is not None:
                before = (await db.execute(_BEFORE_A_SUBJECT_WRITE, {**params, "key": key})).one()
                if before.written is not None:
                    # A concurrent run of the same call got here first.
                    return _add_result(from_jsonb(before.written))
                found = from_jsonb(before.active)
                active = (
                    EmbedderIdentity(found["embedder"], found["version"], int(found["dim"]))
                    if found is not None
                    else None
                )
                await require_for_write(db, agent_id, identity, active=active)
                same = [] if unknown_subject else [(int(i), s) for i, s in from_jsonb(before.same)]
                old_ids = [i for i, _ in same]
                scored = [(i, float(s)) for i, s in same if s is not None]
                if scored:
                    best = max(scored, key=lambda pair: (pair[1], -pair[0]))
            else:
                if key is not None and (first := await _written(db, agent_id, key)) is not None:
                    return first  # a concurrent run of the same call got here first
                await require_for_write(db, agent_id, identity)
                hits = await self._vector_candidates(
                    db, {**params, "n": DEDUPE_CANDIDATES}, _NO_SUBJECT, DEDUPE_CANDIDATES,
                    purpose="dedupe_",
                )  # fmt: skip
                if hits:
                    nearest = min(hits, key=lambda row: (row.distance, row.id))
                    best = (nearest.id, 1.0 - float(nearest.distance))

            near: float | None = None  # a near-duplicate's similarity, when it is superseded
            if best is not None and best[1] >= self.merge_threshold:
                merged_id, similarity = best
                old = (await db.execute(_FOR_MERGE, {"id": merged_id})).one()
                if words_of(old.content) != words_of(content):
                    # Nearly the same, but other words: a correction ("not allowed" after
                    # "allowed" is 0.98 alike to the hashing embedder). The newest words
                    # are the ones recalled; the old memory is superseded, kept for history
                    # (a merge kept the old words and hid the new ones in its notes).
                    near = similarity  # its own importance, as the new words' writer says
                    if merged_id not in old_ids:
                        old_ids.append(merged_id)
                else:
                    old_meta = textcodec.decode_json(old.metadata) or {}
                    entry: dict[str, Any] = {
                        "at": now.isoformat(),
                        "similarity": round(similarity, 6),
                        "importance": importance,
                        "source_session_id": source_session_id,
                        "content": content,
                    }
                    if extra:
                        entry["metadata"] = extra
                    if "merges" not in old_meta:
                        # Its importance before any merge raised it: an erased merger's rise
                        # is taken back (record.erasure).
                        old_meta["own_importance"] = float(old.importance)
                    old_meta["merges"] = [*old_meta.get("merges", []), entry][-MERGE_LOG_LIMIT:]
                    old_meta["merge_count"] = int(old_meta.get("merge_count", 0)) + 1
                    await db.execute(
                        _MERGE,
                        {
                            "id": merged_id,
                            "importance": importance,
                            "metadata": textcodec.encode_json(old_meta),
                            "agent_id": agent_id,
                            "key": key,
                            "source_session_id": source_session_id,
                            "action": "merged",
                            "similarity": similarity,
                            "old_ids": [],
                        },
                    )
                    return AddResult(
                        id=merged_id, action="merged", similarity=similarity, redactions=counts
                    )

            stored_meta: dict[str, Any] = {**extra, "embedder": self.embedder.name}
            if counts:
                stored_meta["redactions"] = counts
            action: Literal["superseded", "inserted"] = "superseded" if old_ids else "inserted"
            new_id: int = (
                await db.execute(
                    _INSERT,
                    {
                        "agent_id": agent_id,
                        "kind": kind,
                        "subject": subject,
                        "subject_key": params["subject_key"],
                        "content": content,
                        "importance": importance,
                        "dim": dim,
                        "vector": literal,
                        "source_session_id": source_session_id,
                        "metadata": textcodec.encode_json(stored_meta),
                        "created_at": created_at,
                        "embedder": identity.name,
                        "version": identity.version,
                        "old_ids": old_ids,
                        "key": key,
                        "action": action,
                        "similarity": near,
                    },
                )
            ).scalar_one()
            return AddResult(
                id=new_id,
                action=action,
                similarity=near,
                superseded_ids=tuple(old_ids),
                redactions=counts,
            )

    async def _written_before(self, agent_id: str, key: str | None) -> AddResult | None:
        """An earlier write's result under ``key``, read outside any transaction (one
        statement on the agent-bound connection); None without a key (nothing read)."""
        if key is None:
            return None
        async with bound_acting_for(self._engine, agent_id) as bound:
            return await _written(bound, agent_id, key)

    # -----------------------------------------------------------------------------------
    # Read

    async def get(self, agent_id: str, memory_id: int) -> MemoryRecord | None:
        """One memory of this agent (live or superseded), or None."""
        async with acting_for(self._sessionmaker, agent_id) as db:
            row = (await db.execute(_GET, {"agent_id": agent_id, "id": memory_id})).one_or_none()
        return _record(row) if row is not None else None

    async def live_ids(self, agent_id: str, ids: list[int]) -> set[int]:
        """Which of ``ids`` are memories of this agent recall may still return (not
        forgotten, superseded or erased): how a kept recall result is checked."""
        async with acting_for(self._sessionmaker, agent_id) as db:
            rows = await db.execute(_LIVE_IDS, {"agent_id": agent_id, "ids": ids})
            return {int(row.id) for row in rows}

    async def forget(
        self, agent_id: str, memory_id: int, *, by: str, reason: str | None = None
    ) -> Forgotten | None:
        """Forget a memory of this agent: it stays (with who, when and why) for history,
        and recall, dedupe and supersede never see it again. When it was current, the
        memories it had superseded are current again: forgetting a wrong correction
        restores what was known before. Forgetting a forgotten memory
        changes nothing (``Forgotten.now`` is false). None when the agent has no such memory.
        """
        self._check_agent(agent_id)
        for value, what in ((by, "by"), (reason, "reason")):
            if value is not None:
                _check_text(value, what)
        async with acting_for(self._sessionmaker, agent_id) as db:
            row = (await db.execute(_GET, {"agent_id": agent_id, "id": memory_id})).one_or_none()
            if row is None:
                return None
            # Held as a write of its kind holds it: a write that chose this memory to
            # merge into or supersede is done before it is forgotten, and one after sees
            # it forgotten (and what it restores).
            await db.execute(lock_kind(agent_id, row.kind))
            params = {"agent_id": agent_id, "id": memory_id, "by": by, "reason": reason}
            done = (await db.execute(_FORGET, params)).one()
            row = (await db.execute(_GET, {"agent_id": agent_id, "id": memory_id})).one_or_none()
        if row is None:  # erased while the forget waited for the lock
            return None
        return Forgotten(_record(row), now=bool(done.forgotten), restored_ids=tuple(done.restored))

    async def history(
        self,
        agent_id: str,
        subject: str,
        *,
        kind: str | None = None,
        limit: int | None = None,
        before: int | None = None,
        include_forgotten: bool = True,
    ) -> list[MemoryRecord]:
        """The versions of what the agent knew about ``subject``, oldest first: every one,
        or the newest ``limit`` of those older than memory ``before``; without the
        forgotten ones unless ``include_forgotten``.

        Each superseding memory was written after the one it replaced, so id order is
        the order of the supersede chain. The subject is compared as it is kept (NFKC,
        case-folded: ``subject_key``).
        """
        self._check_agent(agent_id)
        normal = _kept_subject(subject)
        if normal is None:
            return []
        _check_text(normal, "subject")
        async with acting_for(self._sessionmaker, agent_id) as db:
            rows = await db.execute(
                _HISTORY,
                {
                    "agent_id": agent_id,
                    "subject_key": subject_key(normal),
                    "kind": kind,
                    "before": before,
                    "forgotten": include_forgotten,
                    "n": limit,
                },
            )
            return [_record(row) for row in reversed(rows.all())]


def _visible(text: str) -> bool:
    """Whether ``text`` holds a character that shows: not only spaces and format
    characters (a zero-width space alone was taken as a memory)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)
