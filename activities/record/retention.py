"""Queries of retention: per-agent policies, and the sessions they make due.

A policy says, for one agent, how long after a session ended it is archived (pruned from
PostgreSQL into the object store) and how long after it ended it is erased. A session is
due for erasure once ``erase_after`` has passed (archived or not), otherwise for archival
once ``archive_after`` has passed and it is not archived yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.archive import FINISHED_STATUSES

RetentionAction = Literal["archive", "erase"]


@dataclass(frozen=True)
class RetentionPolicy:
    agent_id: str
    archive_after: timedelta | None
    erase_after: timedelta | None
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class DueSession:
    session_id: str
    agent_id: str
    action: RetentionAction


_COLUMNS = "agent_id, archive_after, erase_after, updated_by, updated_at"


def _policy(row: Any) -> RetentionPolicy:
    return RetentionPolicy(
        agent_id=row.agent_id,
        archive_after=row.archive_after,
        erase_after=row.erase_after,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


async def set_policy(
    db: DbSession,
    agent_id: str,
    *,
    archive_after: timedelta | None,
    erase_after: timedelta | None,
    by: str,
) -> RetentionPolicy | None:
    """Set (replace) the agent's policy; with neither period, remove it (returns None)."""
    if archive_after is None and erase_after is None:
        await db.execute(
            text("DELETE FROM retention_policies WHERE agent_id = :a"), {"a": agent_id}
        )
        return None
    row = (
        await db.execute(
            text(
                "INSERT INTO retention_policies (agent_id, archive_after, erase_after, "
                "updated_by) VALUES (:a, :archive, :erase, :by) "
                "ON CONFLICT (agent_id) DO UPDATE SET archive_after = EXCLUDED.archive_after, "
                "erase_after = EXCLUDED.erase_after, updated_by = EXCLUDED.updated_by, "
                f"updated_at = now() RETURNING {_COLUMNS}"
            ),
            {"a": agent_id, "archive": archive_after, "erase": erase_after, "by": by},
        )
    ).one()
    return _policy(row)


async def list_policies(db: DbSession) -> list[RetentionPolicy]:
    rows = await db.execute(text(f"SELECT {_COLUMNS} FROM retention_policies ORDER BY agent_id"))
    return [_policy(r) for r in rows]


async def due_sessions(
    db: DbSession, *, limit: int, skip: list[str] | None = None
) -> list[DueSession]:
    """Ended sessions whose agent's policy makes them due now, oldest end first."""
    rows = await db.execute(
        text(
            "WITH s AS (SELECT s.id, s.agent_id, s.archive_uri, "
            "  coalesce(s.finished_at, s.updated_at) AS ended, p.archive_after, p.erase_after "
            "  FROM sessions s JOIN retention_policies p ON p.agent_id = s.agent_id "
            "  WHERE s.status = ANY(:finished) AND NOT (s.id = ANY(:skip))) "
            "SELECT id, agent_id, CASE WHEN erase_after IS NOT NULL "
            "  AND ended <= now() - erase_after THEN 'erase' ELSE 'archive' END AS action "
            "FROM s WHERE (erase_after IS NOT NULL AND ended <= now() - erase_after) "
            "OR (archive_after IS NOT NULL AND archive_uri IS NULL "
            "    AND ended <= now() - archive_after) "
            "ORDER BY ended, id LIMIT :lim"
        ),
        {"finished": sorted(FINISHED_STATUSES), "skip": skip or [], "lim": limit},
    )
    return [DueSession(r.id, r.agent_id, r.action) for r in rows]
