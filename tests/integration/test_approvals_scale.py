"""What asks for the sessions that have not ended reads those, not every session the
record keeps for good: the approvals inbox (``GET /approvals``, ``vigil approvals``), the
waiting-approvals gauge (``/metrics``, read at every scrape) and the reconciler's pass
(every worker runs one every few minutes). The rows their plans read are counted
(PostgreSQL's EXPLAIN), never timed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.plans import explain, own_database, rows_read
from vigil.activities.record import reconcile
from vigil.activities.record import sessions as record
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

ENDED = 20_000
"""Ended sessions, each with an approval asked and decided."""
WAITING = 5
"""Sessions waiting for an approval each."""
ALLOWED_ROWS = 20 * WAITING + 20
"""A few rows for each waiting session (its row, its approval, the look for a decision,
the call's message) and the statuses' index: nothing for the ended sessions."""


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[async_sessionmaker[DbSession]]:
    async with own_database(stack, "vigil_test_approvals") as sessionmaker:
        yield sessionmaker


async def test_waiting_approvals_are_read_without_the_ended_sessions(
    database: async_sessionmaker[DbSession],
) -> None:
    sessionmaker = database
    agent = f"ops-{uuid.uuid4().hex[:8]}"
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text("INSERT INTO agents (id, name) VALUES (:a, :name)"), {"a": agent, "name": agent}
        )
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status) "
                "SELECT 's-' || n, :a, 'g', "
                "CASE WHEN n <= CAST(:waiting AS int) THEN 'waiting_approval' "
                "ELSE 'completed' END "
                "FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"a": agent, "waiting": WAITING, "n": WAITING + ENDED},
        )
        await db.execute(
            text(
                "INSERT INTO messages (session_id, agent_id, seq, role, content, step, tool_calls) "
                "SELECT 's-' || n, :a, 1, 'assistant', '', 1, "
                '\'[{"id": "c1", "name": "write_artifact", "arguments": "{}"}]\'::jsonb '
                "FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"a": agent, "n": WAITING + ENDED},
        )
        await db.execute(
            text(
                "INSERT INTO events (session_id, agent_id, key, kind, step, payload) "
                "SELECT 's-' || n, :a, 'approval:a1-0', 'approval_requested', 1, "
                "jsonb_build_object('approval_id', 'a1-0', 'tool', 'write_artifact') "
                "FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"a": agent, "n": WAITING + ENDED},
        )
        await db.execute(
            text(
                "INSERT INTO events (session_id, agent_id, key, kind, step, payload) "
                "SELECT 's-' || n, :a, 'approval:a1-0:decided', 'approval_decided', 1, "
                "'{}'::jsonb FROM generate_series(CAST(:first AS int), CAST(:n AS int)) AS n"
            ),
            {"a": agent, "first": WAITING + 1, "n": WAITING + ENDED},
        )
        await db.execute(text("ANALYZE"))

    async with sessionmaker() as db:
        pending = (await record.pending_approvals(db, agent=agent)).items
        waiting = await record.approvals_waiting(db)
        assert sorted(p.session_id for p in pending) == [f"s-{n}" for n in range(1, WAITING + 1)]
        assert [p.tool for p in pending] == ["write_artifact"] * WAITING
        assert [(w.agent_id, w.waiting) for w in waiting] == [(agent, WAITING)]
        open_now = await reconcile.open_sessions(db)
        assert sorted(o.id for o in open_now) == [f"s-{n}" for n in range(1, WAITING + 1)]

        for statement, params in (
            (
                record._PENDING,
                {
                    "open": record.OPEN_STATUSES,
                    "agent": agent,
                    "agents": None,
                    "decided": ":decided",
                    "after_at": None,
                    "after_id": None,
                    "lim": 200,
                },
            ),
            (record._WAITING, {"open": record.OPEN_STATUSES, "decided": ":decided"}),
            (
                reconcile.OPEN_SESSIONS,
                {
                    "open": record.OPEN_STATUSES,
                    "after": "",
                    "idle": timedelta(0),
                    "ids": None,
                    "lim": 200,
                },
            ),
        ):
            read = rows_read((await explain(db, statement.text, params))["Plan"])
            assert read <= ALLOWED_ROWS, (statement.text[:40], read)
