"""Queries of retention: per-agent policies, and the sessions they make due.

A policy says, for one agent, how long after a session ended (its ``finished_at``) it is
archived (pruned from PostgreSQL into the object store) and how long after it ended it is
erased. A session is due for erasure once ``erase_after`` has passed (archived or not),
otherwise for archival once ``archive_after`` has passed and it is not archived yet.
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


# Per agent with a policy, from its own index range, each branch in the order of the
# end and cut at the limit: the sessions due for erasure (ended before the erasure's
# cutoff, archived or not) and those due for archival (not archived, ended between the
# two cutoffs). Neither reads the sessions that are not due, however many an agent keeps
# (migration 20261205_22); a session's end is its ``finished_at``.
_BRANCH = (
    "SELECT d.id, d.agent_id, d.finished_at, '{action}' AS action FROM p CROSS JOIN LATERAL ("
    "  SELECT s.id, s.agent_id, s.finished_at FROM sessions s "
    "  WHERE s.agent_id = p.agent_id AND s.finished_at IS NOT NULL {where} "
    "    AND s.status = ANY(:finished) AND NOT (s.id = ANY(:skip)) "
    "  ORDER BY s.finished_at, s.id LIMIT :lim) d "
    "WHERE p.{period} IS NOT NULL"
)
_DUE = text(
    "WITH p AS (SELECT agent_id, archive_after, erase_after, now() AS at "
    "  FROM retention_policies) "
    "SELECT id, agent_id, action FROM ("
    + _BRANCH.format(
        action="erase", period="erase_after", where="AND s.finished_at <= p.at - p.erase_after"
    )
    + " UNION ALL "
    + _BRANCH.format(
        action="archive",
        period="archive_after",
        where="AND s.archive_uri IS NULL AND s.finished_at <= p.at - p.archive_after "
        "AND s.finished_at > coalesce(p.at - p.erase_after, '-infinity')",
    )
    + ") due ORDER BY finished_at, id LIMIT :lim"
)


def _due_params(limit: int, skip: list[str] | None) -> dict[str, Any]:
    return {"finished": sorted(FINISHED_STATUSES), "skip": skip or [], "lim": limit}


async def due_sessions(
    db: DbSession, *, limit: int, skip: list[str] | None = None
) -> list[DueSession]:
    """Ended sessions whose agent's policy makes them due now, oldest end first."""
    rows = await db.execute(_DUE, _due_params(limit, skip))
    return [DueSession(r.id, r.agent_id, r.action) for r in rows]
