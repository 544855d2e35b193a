"""Queries of erasure: a subject's data in PostgreSQL, removing it, and the receipt.

A subject is one session or one agent. Its data is: the sessions rows and everything
hanging off them (messages, events, artifact links, by cascade), the memories written
from those sessions (or all of the agent's; a session's memory that others merged their
words into is handed on to them instead, ``record.handon``), the merge notes those
sessions left in the agent's other memories, the artifact rows no one else refers to (and
their holders), the sessions' archives, the webhook attempts and the session named in the
answers and refusals triggers kept, and for an agent its definition and versions,
triggers, webhooks, retention policy and embedder records.

``purge`` removes all of it in the caller's transaction, as system work with record
maintenance declared (the record is otherwise append-only), and returns the digests of
the objects whose rows it removed: the caller deletes those bytes while the transaction
still holds their per-digest locks, writes the receipt, then commits. So either the rows
and the receipt are committed together, or nothing is (and erasing again finishes it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.artifacts.registry import lock_digest
from vigil.activities.record import handon
from vigil.activities.record.archive import EVENT_DIGESTS
from vigil.activities.record.lean import memory_lock, xact_lock
from vigil.activities.record.rls import record_maintenance
from vigil.schema.tools import MEMORY_KINDS

SubjectKind = Literal["session", "agent"]


@dataclass(frozen=True)
class ErasureScope:
    """What erasing a subject would remove from PostgreSQL, counted before it is done."""

    kind: SubjectKind
    subject: str
    agent_id: str | None
    """The agent (for a session: the agent it belongs to; None when it is not recorded)."""
    session_ids: list[str]
    messages: int = 0
    events: int = 0
    memories: int = 0
    artifact_links: int = 0
    archives: int = 0
    merge_notes: int = 0
    """The agent's other memories holding words the session merged into them."""
    definitions: int = 0
    """An agent's rows besides its sessions and memories: its definition and versions,
    triggers, webhooks, retention policy, artifact holds and embedder records."""
    deliveries: int = 0
    """Webhook attempts naming the subject (one recorded as an earlier erasure of it ran
    is erased by the next)."""

    @property
    def empty(self) -> bool:
        return not (
            self.session_ids
            or self.memories
            or self.merge_notes
            or self.definitions
            or self.deliveries
        )


@dataclass
class Purged:
    """What ``purge`` removed, and the objects whose bytes the caller must delete."""

    counts: dict[str, int] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)
    """Digests whose ``artifacts`` rows were removed (locked until the transaction ends)."""
    archives: list[str] = field(default_factory=list)
    """Those of ``objects`` that were session archives."""


@dataclass(frozen=True)
class ErasureReceipt:
    """The one thing an erasure leaves: what, when, who, how much."""

    id: int
    subject_kind: SubjectKind
    subject_id: str
    requested_by: str
    reason: str | None
    erased_at: datetime
    counts: dict[str, int]


async def _counts(db: DbSession, session_ids: list[str]) -> dict[str, int]:
    row = (
        await db.execute(
            text(
                "SELECT (SELECT count(*) FROM messages WHERE session_id = ANY(:s)) AS messages, "
                "(SELECT count(*) FROM events WHERE session_id = ANY(:s)) AS events, "
                "(SELECT count(*) FROM artifact_links WHERE session_id = ANY(:s)) AS links, "
                "(SELECT count(*) FROM sessions WHERE id = ANY(:s) "
                " AND metadata ? 'archive') AS archives"
            ),
            {"s": session_ids},
        )
    ).one()
    return {
        "messages": int(row.messages),
        "events": int(row.events),
        "artifact_links": int(row.links),
        "archives": int(row.archives),
    }


_SESSION_DELIVERIES_WHERE = {
    True: "agent_id = :a AND session_id = :s",
    # The session is no longer recorded (an attempt left by an earlier erasure of it): by
    # its id alone, over the whole table.
    False: "session_id = :s",
}
"""SQL: which webhook attempts are a session's, by its agent and id where the agent is
known (the table's index leads with the agent)."""


async def session_scope(db: DbSession, session_id: str) -> ErasureScope:
    """The scope of erasing one session (empty when it is not recorded)."""
    agent = (
        await db.execute(text("SELECT agent_id FROM sessions WHERE id = :id"), {"id": session_id})
    ).scalar_one_or_none()
    sessions = [session_id] if agent is not None else []
    memories = (
        await db.execute(
            text("SELECT count(*) FROM memories WHERE source_session_id = :id"),
            {"id": session_id},
        )
    ).scalar_one()
    # Its words merged into the agent's other memories (a session no longer recorded has
    # no agent to look in: erased before, its notes went with it).
    notes = 0
    if agent is not None:
        notes = (
            await db.execute(
                text(
                    "SELECT count(*) FROM memories WHERE agent_id = :a "
                    "AND source_session_id IS DISTINCT FROM :s AND " + handon.MERGED_FROM
                ),
                {"s": session_id, "a": agent},
            )
        ).scalar_one()
    counts = await _counts(db, sessions)
    where = _SESSION_DELIVERIES_WHERE[agent is not None]
    deliveries = await db.execute(
        text(f"SELECT count(*) FROM webhook_deliveries WHERE {where}"),
        {"s": session_id, "a": agent},
    )
    return ErasureScope(
        "session", session_id, agent, sessions,
        memories=int(memories), merge_notes=int(notes),
        deliveries=int(deliveries.scalar_one()), **counts,
    )  # fmt: skip


async def agent_scope(db: DbSession, agent_id: str) -> ErasureScope:
    """The scope of erasing an agent: all its sessions and memories."""
    sessions = list(
        (
            await db.execute(
                text("SELECT id FROM sessions WHERE agent_id = :a ORDER BY id"), {"a": agent_id}
            )
        ).scalars()
    )
    memories = (
        await db.execute(text("SELECT count(*) FROM memories WHERE agent_id = :a"), {"a": agent_id})
    ).scalar_one()
    known = (
        await db.execute(
            text(
                "SELECT "
                + " + ".join(
                    f"(SELECT count(*) FROM {table} WHERE {column} = :a)"
                    for table, column in _AGENT_ROWS
                )
            ),
            {"a": agent_id},
        )
    ).scalar_one()
    counts = await _counts(db, sessions)
    deliveries = await db.execute(
        text("SELECT count(*) FROM webhook_deliveries WHERE agent_id = :a"), {"a": agent_id}
    )
    return ErasureScope(
        "agent",
        agent_id,
        agent_id if known or sessions or memories else None,
        sessions,
        memories=int(memories),
        definitions=int(known),
        deliveries=int(deliveries.scalar_one()),
        **counts,
    )


_AGENT_ROWS = (
    ("agents", "id"),
    ("agent_versions", "agent_id"),
    ("triggers", "agent_id"),
    ("webhooks", "agent_id"),
    ("retention_policies", "agent_id"),
    ("artifact_holders", "agent_id"),
    ("memory_embedders", "agent_id"),
)
"""Where an agent has rows besides its sessions and memories."""


async def _candidate_digests(db: DbSession, session_ids: list[str]) -> tuple[set[str], set[str]]:
    """(artifacts the sessions refer to, the sessions' archives)."""
    rows = await db.execute(
        text(
            "SELECT sha256, false AS archive FROM artifact_links WHERE session_id = ANY(:s) "
            f"UNION SELECT d.sha, false FROM ({EVENT_DIGESTS}) AS d(sha) "
            "UNION SELECT metadata -> 'archive' ->> 'sha256', true FROM sessions "
            "  WHERE id = ANY(:s)"
        ),
        {"s": session_ids},
    )
    referred: set[str] = set()
    archives: set[str] = set()
    for sha, is_archive in rows:
        if sha:
            (archives if is_archive else referred).add(str(sha))
    return referred, archives


_TO_HEIRS = (
    # From each erased memory a kept one points to, its successors, followed while they
    # are erased too (at most as many steps as there are erased memories); its heir is
    # the first that is not. A kept memory pointing to one with no heir found (a cycle,
    # which superseding never makes) is made current by _NO_HEIR: no pointer to an erased
    # memory is left.
    "WITH RECURSIVE chain (erased, next, steps) AS ("
    "  SELECT id, superseded_by, 1 FROM memories WHERE id = ANY(:ids) AND id IN ("
    "    SELECT superseded_by FROM memories"
    "    WHERE superseded_by = ANY(:ids) AND NOT (id = ANY(:ids)))"
    "  UNION ALL"
    "  SELECT c.erased, m.superseded_by, c.steps + 1 FROM chain c JOIN memories m"
    "  ON m.id = c.next WHERE c.next = ANY(:ids) AND c.steps <= cardinality(:ids)"
    "), heirs AS ("
    "  SELECT c.erased, c.next AS heir, h.created_at AS since FROM chain c"
    "  LEFT JOIN memories h ON h.id = c.next"
    "  WHERE c.next IS NULL OR NOT (c.next = ANY(:ids))"
    ") "
    "UPDATE memories m SET superseded_by = heirs.heir, superseded_at = heirs.since "
    "FROM heirs WHERE m.superseded_by = heirs.erased AND NOT (m.id = ANY(:ids))"
)
"""SQL: what the memories ``:ids`` (being erased) superseded is superseded by their heirs."""
_NO_HEIR = (
    "UPDATE memories SET superseded_by = NULL, superseded_at = NULL "
    "WHERE superseded_by = ANY(:ids) AND NOT (id = ANY(:ids))"
)


async def _delete_memories(
    db: DbSession, scope: ErasureScope, embedded: handon.Embedded | None
) -> dict[str, int]:
    if scope.kind == "agent":
        result = await db.execute(
            text("DELETE FROM memories WHERE agent_id = :a"), {"a": scope.subject}
        )
        # Which embedder the agent's (now gone) vectors came from goes with them.
        await db.execute(
            text("DELETE FROM memory_embedders WHERE agent_id = :a"), {"a": scope.subject}
        )
        return {"memories": int(result.rowcount)}  # type: ignore[attr-defined]
    handed = await handon.hand_on(db, scope.subject, embedded)
    ids = list(
        (
            await db.execute(
                text("SELECT id FROM memories WHERE source_session_id = :s FOR UPDATE"),
                {"s": scope.subject},
            )
        ).scalars()
    )
    if ids:
        # A memory an erased one superseded is superseded by what superseded that one
        # (the first of its successors not erased), then, as if the erased one never
        # was; live again when there is none (what replaced it is gone).
        await db.execute(text(_TO_HEIRS), {"ids": ids})
        await db.execute(text(_NO_HEIR), {"ids": ids})
        await db.execute(text("DELETE FROM memories WHERE id = ANY(:ids)"), {"ids": ids})
    # Merges of the session's words into the agent's other memories are noted in their
    # metadata (content included): those notes go too (``record.handon.strip_notes``).
    notes = await handon.strip_notes(db, scope.subject, scope.agent_id)
    counts = {
        "memories": len(ids) - len(handed.handed),
        "memories_handed_on": len(handed.handed),
        "merge_notes": notes,
    }
    if handed.lost:
        counts["merged_memories_deleted"] = handed.lost
    return counts


async def _release_holders(db: DbSession, scope: ErasureScope, referred: set[str]) -> None:
    if scope.kind == "agent":
        await db.execute(
            text("DELETE FROM artifact_holders WHERE agent_id = :a"), {"a": scope.subject}
        )
        return
    # The agent keeps holding what its other sessions still refer to.
    await db.execute(
        text(
            "DELETE FROM artifact_holders h WHERE h.agent_id = :a AND h.sha256 = ANY(:shas) "
            "AND NOT EXISTS (SELECT 1 FROM artifact_links l "
            "                WHERE l.sha256 = h.sha256 AND l.agent_id = :a) "
            "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.agent_id = :a "
            "                AND e.kind IN ('artifact_replaced', 'artifact.replaced') "
            "                AND e.payload ->> 'previous_sha256' = h.sha256) "
            # ... and what its pruned sessions' events named (kept with their archives).
            "AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.agent_id = :a "
            "                AND s.archive_uri IS NOT NULL "
            "                AND s.metadata -> 'archive' -> 'artifacts' ? h.sha256)"
        ),
        {"a": scope.agent_id, "shas": sorted(referred)},
    )


async def _unreferenced(db: DbSession, digests: list[str]) -> list[str]:
    rows = await db.execute(
        text(
            "SELECT a.sha256 FROM artifacts a WHERE a.sha256 = ANY(:shas) "
            "AND NOT EXISTS (SELECT 1 FROM artifact_links l WHERE l.sha256 = a.sha256) "
            "AND NOT EXISTS (SELECT 1 FROM artifact_holders h WHERE h.sha256 = a.sha256) "
            "ORDER BY a.sha256"
        ),
        {"shas": digests},
    )
    return [str(sha) for sha in rows.scalars()]


TRIGGER_ANSWERS = text(
    "UPDATE trigger_deliveries "
    'SET result = result || \'{"outcome": "erased", "session_id": null}\'::jsonb '
    "WHERE result ->> 'session_id' = ANY(:s)"
)
"""The answers triggers kept for deliveries that acted on the sessions (found by the index
of migration 20261206_24) lose the session: each says ``erased`` instead, and is kept, so
the sender's retry of the delivery is answered as acted on, and does not act again."""

TRIGGER_REFUSALS = text(
    "UPDATE trigger_deliveries SET result = jsonb_build_object('error', jsonb_build_object("
    "  'code', result -> 'error' -> 'code', "
    "  'message', 'refused: the session it named was erased')) "
    "WHERE status_code >= 400 AND result ? 'error' "
    "AND trigger_name IN (SELECT name FROM triggers WHERE agent_id = :a) "
    "AND EXISTS (SELECT 1 FROM unnest(CAST(:s AS text[])) AS x(id) "
    "            WHERE strpos(result -> 'error' ->> 'message', format('%L', x.id)) > 0)"
)
"""The refusals the agent's triggers kept whose words name one of the sessions, quoted as
they name a session (a keyed delivery refused because the key's session had ended): the
same refusal, without the name (the partial index of migration 20261206_24 holds the
refusals alone)."""


async def purge(
    db: DbSession, scope: ErasureScope, embedded: handon.Embedded | None = None
) -> Purged:
    """Remove the subject's data in ``db``'s transaction (see the module docstring).

    A memory of an erased session that another session (or a person) later merged words
    into is handed on instead (``record.handon``), with the vector ``embedded`` holds
    for its new words; without one it is deleted (``merged_memories_deleted``)."""
    await record_maintenance(db)
    await _take_erasure_locks(db, scope)
    if scope.kind == "session" and scope.agent_id is None:
        # Recorded since the scope was read: an opening already under way when the erasure
        # began wrote its row before this lock (one after it waits, then finds the
        # receipt). Its row, its words and its agent's memory of it go too, under that
        # agent's locks as any recorded session's erasure takes them.
        agent = (
            await db.execute(
                text("SELECT agent_id FROM sessions WHERE id = :s"), {"s": scope.subject}
            )
        ).scalar_one_or_none()
        if agent is not None:
            scope = replace(scope, agent_id=agent, session_ids=[scope.subject])
            await _take_erasure_locks(db, scope)
    sessions = scope.session_ids
    if scope.kind == "agent":
        # Sessions recorded since the scope was read (a schedule's run, one too new for
        # Temporal's listing when the erasure began) go too: the agent's row could not.
        recorded = await db.execute(
            text("SELECT id FROM sessions WHERE agent_id = :a"), {"a": scope.subject}
        )
        sessions = sorted({*sessions, *recorded.scalars()})
    await db.execute(
        text("SELECT id FROM sessions WHERE id = ANY(:s) ORDER BY id FOR UPDATE"), {"s": sessions}
    )
    counts = await _counts(db, sessions)
    referred, archives = await _candidate_digests(db, sessions)
    counts.update(await _delete_memories(db, scope, embedded))
    deleted = await db.execute(text("DELETE FROM sessions WHERE id = ANY(:s)"), {"s": sessions})
    counts["sessions"] = int(deleted.rowcount)  # type: ignore[attr-defined]
    await _release_holders(db, scope, referred)

    purged = Purged(counts=counts)
    candidates = sorted(referred | archives)
    # Lock each digest (a put registering the same bytes waits, or is waited for), then
    # decide under the lock: what someone still refers to stays.
    for sha in await _unreferenced(db, candidates):
        await lock_digest(db, sha, exclusive=True)
    removable = await _unreferenced(db, candidates)
    if removable:
        await db.execute(text("DELETE FROM artifacts WHERE sha256 = ANY(:s)"), {"s": removable})
    purged.objects = removable
    purged.archives = [sha for sha in removable if sha in archives]
    counts["artifacts"] = len(removable) - len(purged.archives)
    counts["archives"] = len(purged.archives)

    # What the hooks kept of it: delivery attempts (their URLs, events, errors), and the
    # session named in the answers a trigger keeps for a delivery sent again.
    hooks = await db.execute(
        text(
            "DELETE FROM webhook_deliveries WHERE agent_id = :a"
            if scope.kind == "agent"
            else "DELETE FROM webhook_deliveries WHERE "
            + _SESSION_DELIVERIES_WHERE[scope.agent_id is not None]
        ),
        {"s": scope.subject, "a": scope.agent_id or scope.subject},
    )
    counts["webhook_deliveries"] = int(hooks.rowcount)  # type: ignore[attr-defined]
    if scope.kind == "session":  # an agent's triggers go below, and what they kept
        # By the id erased, recorded or not: a trigger's start answered with the id of a
        # session no worker had opened yet (its row not written) names it too.
        answers = await db.execute(TRIGGER_ANSWERS, {"s": [scope.subject]})
        refusals = await db.execute(TRIGGER_REFUSALS, {"s": sessions, "a": scope.agent_id})
        scrubbed = int(answers.rowcount) + int(refusals.rowcount)  # type: ignore[attr-defined]
        counts["trigger_answers_scrubbed"] = scrubbed
    if scope.kind == "agent":
        for table in ("webhooks", "triggers"):  # a trigger's deliveries go with it
            gone_hooks = await db.execute(
                text(f"DELETE FROM {table} WHERE agent_id = :a"), {"a": scope.subject}
            )
            counts[table] = int(gone_hooks.rowcount)  # type: ignore[attr-defined]
        policies = await db.execute(
            text("DELETE FROM retention_policies WHERE agent_id = :a"), {"a": scope.subject}
        )
        counts["retention_policies"] = int(policies.rowcount)  # type: ignore[attr-defined]
        # API tokens that covered the agent alone go (a new agent defined under its name
        # is not theirs); those that covered others too keep covering those.
        tokens = await db.execute(
            text(
                "DELETE FROM api_tokens WHERE :a = ANY(agents) "
                "AND cardinality(array_remove(agents, :a)) = 0"
            ),
            {"a": scope.subject},
        )
        counts["api_tokens"] = int(tokens.rowcount)  # type: ignore[attr-defined]
        narrowed = await db.execute(
            text("UPDATE api_tokens SET agents = array_remove(agents, :a) WHERE :a = ANY(agents)"),
            {"a": scope.subject},
        )
        counts["api_tokens_narrowed"] = int(narrowed.rowcount)  # type: ignore[attr-defined]
        versions = await db.execute(
            text("DELETE FROM agent_versions WHERE agent_id = :a"), {"a": scope.subject}
        )
        counts["agent_versions"] = int(versions.rowcount)  # type: ignore[attr-defined]
        gone = await db.execute(text("DELETE FROM agents WHERE id = :a"), {"a": scope.subject})
        counts["agents"] = int(gone.rowcount)  # type: ignore[attr-defined]
    return purged


async def write_receipt(
    db: DbSession,
    *,
    kind: SubjectKind,
    subject: str,
    by: str,
    reason: str | None,
    counts: dict[str, int],
) -> ErasureReceipt:
    row = (
        await db.execute(
            text(
                # Its time is when it is written, the erasure's work done, not when the
                # erasure's transaction began (now()): a session started meanwhile (its
                # opening waits for the erasure) is one the erasure came after.
                "INSERT INTO erasure_receipts (subject_kind, subject_id, requested_by, reason, "
                "counts, erased_at) "
                "VALUES (:k, :s, :by, :reason, CAST(:counts AS jsonb), clock_timestamp()) "
                "RETURNING id, subject_kind, subject_id, requested_by, reason, erased_at, counts"
            ),
            {
                "k": kind,
                "s": subject,
                "by": by,
                "reason": reason,
                "counts": json.dumps(counts, sort_keys=True),
            },
        )
    ).one()
    return _receipt(row)


def _receipt(row: Any) -> ErasureReceipt:
    counts = row.counts if not isinstance(row.counts, str) else json.loads(row.counts)
    return ErasureReceipt(
        id=row.id,
        subject_kind=row.subject_kind,
        subject_id=row.subject_id,
        requested_by=row.requested_by,
        reason=row.reason,
        erased_at=row.erased_at,
        counts={str(k): int(v) for k, v in counts.items()},
    )


async def list_receipts(
    db: DbSession, *, subject: str | None = None, limit: int = 100
) -> list[ErasureReceipt]:
    """Receipts, newest first (of one subject id when given)."""
    rows = await db.execute(
        text(
            "SELECT id, subject_kind, subject_id, requested_by, reason, erased_at, counts "
            "FROM erasure_receipts WHERE (CAST(:s AS text) IS NULL OR subject_id = :s) "
            "ORDER BY id DESC LIMIT :lim"
        ),
        {"s": subject, "lim": limit},
    )
    return [_receipt(r) for r in rows]


async def last_agent_erasure(db: DbSession, agent_id: str) -> int:
    """The id of the agent's latest erasure receipt (0: never erased); a larger one later
    means it was erased meanwhile."""
    found = await db.execute(
        text(
            "SELECT coalesce(max(id), 0) FROM erasure_receipts "
            "WHERE subject_kind = 'agent' AND subject_id = :a"
        ),
        {"a": agent_id},
    )
    return int(found.scalar_one())


def _erasing(kind: SubjectKind, subject: str) -> str:
    """The advisory lock key of erasing ``subject``: an agent's, or one session's."""
    return f"vigil.erasing.{kind}:{subject}"


async def _take_erasure_locks(db: DbSession, scope: ErasureScope) -> None:
    """An agent's erasure holds its agent's key alone; a session's, its own key alone and
    its agent's shared (two sessions of one agent are erased side by side, not while the
    agent is); then either takes its agent's memory locks. What ``held_from_erasure``
    holds is waited for, and then waits."""
    if scope.kind == "agent":
        locks = [xact_lock(_erasing("agent", scope.subject))]
    else:
        locks = [xact_lock(_erasing("session", scope.subject))]
        if scope.agent_id is not None:
            locks.insert(0, xact_lock(_erasing("agent", scope.agent_id), shared=True))
    await db.execute(text("SELECT " + ", ".join(locks)))
    agent = scope.subject if scope.kind == "agent" else scope.agent_id
    if agent is not None:
        # Then the locks the agent's memory writes and forgets hold, one per kind (every
        # kind a write may take, and any other the agent's memories hold), before any
        # row: a write that merges into a memory of the session, or supersedes one, is
        # done before the erasure reads them, and one after finds them gone. (An agent's
        # erasure deleting its memories deadlocked with a write inserting one.)
        found = await db.execute(
            text("SELECT DISTINCT kind FROM memories WHERE agent_id = :a"), {"a": agent}
        )
        kinds = sorted({*MEMORY_KINDS, *found.scalars()})
        memory = [xact_lock(memory_lock(agent, kind)) for kind in kinds]
        await db.execute(text("SELECT " + ", ".join(memory)))


def hold_from_erasure(agent_id: str, session_id: str) -> str:
    """SQL (no parameters) that, until its transaction ends, keeps any erasure of
    ``agent_id`` or of ``session_id`` from running, waiting for one that runs. A write
    checked against the erasure receipts in a later statement (which reads what committed
    before it) cannot land between an erasure's purge and its receipt, where neither would
    see the other: a delivery's attempt, a session's opening."""
    agent = xact_lock(_erasing("agent", agent_id), shared=True)  # first, as the erasures
    return f"SELECT {agent}, {xact_lock(_erasing('session', session_id), shared=True)}"


async def held_from_erasure(db: DbSession, agent_id: str, session_id: str) -> None:
    """``hold_from_erasure`` in ``db``'s transaction."""
    await db.execute(text(hold_from_erasure(agent_id, session_id)))


async def erased_since(db: DbSession, session_id: str, agent_id: str | None, at: datetime) -> bool:
    """Whether the session (or its agent, when known) was erased at ``at`` or later: an
    event it had before is no longer anyone's to deliver, and a run that started before
    is gone with it."""
    found = await db.execute(
        text(
            "SELECT EXISTS (SELECT FROM erasure_receipts WHERE erased_at >= :at AND ("
            "(subject_kind = 'session' AND subject_id = :s) "
            "OR (subject_kind = 'agent' AND subject_id = :a)))"
        ),
        {"s": session_id, "a": agent_id, "at": at},
    )
    return bool(found.scalar_one())
