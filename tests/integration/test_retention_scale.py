"""The retention sweep's plan reads about what is due, however many ended sessions its
agents keep: an agent whose schedule starts a session a minute ends half a million in a
year, and a policy that archives without erasing keeps every one of them (archived, its
row stays). The sweep runs every hour on one worker; it read every ended session of every
agent with a policy to find the few now due. The rows its plan reads are counted
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
from vigil.activities.record import store as record
from vigil.activities.record.retention import _DUE, _due_params, due_sessions
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

KEPT = 10_000
"""Ended sessions each agent keeps that are not due (archived long ago, or ended lately)."""
LIMIT = 50


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[async_sessionmaker[DbSession]]:
    async with own_database(stack, "vigil_test_retention") as sessionmaker:
        yield sessionmaker


async def _sessions(
    db: DbSession,
    agent: str,
    prefix: str,
    count: int,
    *,
    days_ago: float,
    archived: bool = False,
    status: str = "completed",
) -> None:
    """``count`` sessions of ``agent`` that ended ``days_ago`` days ago (a minute apart,
    the first the oldest), ids ``prefix-1``..."""
    await db.execute(
        text(
            "INSERT INTO sessions (id, agent_id, goal, status, created_at, updated_at, "
            "finished_at, archive_uri) "
            "SELECT :p || '-' || n, :a, 'g', :status, e - interval '1 hour', e, e, "
            "CASE WHEN :archived THEN 's3://archive/' || :p || '-' || n END "
            "FROM generate_series(1, CAST(:n AS int)) AS n, LATERAL (SELECT now() "
            "- make_interval(secs => CAST(:days AS float) * 86400 - n * 60) AS e) AS ended"
        ),
        {"p": prefix, "a": agent, "n": count, "days": days_ago, "archived": archived,
         "status": status},
    )  # fmt: skip


async def _policy(db: DbSession, agent: str, archive: int | None, erase: int | None) -> None:
    """The agent, and its policy (days) unless it has none."""
    await db.execute(
        text("INSERT INTO agents (id, name) VALUES (:a, :n)"), {"a": agent, "n": agent}
    )
    if archive is None and erase is None:
        return
    await db.execute(
        text(
            "INSERT INTO retention_policies (agent_id, archive_after, erase_after, updated_by) "
            "VALUES (:a, :archive, :erase, 'test')"
        ),
        {
            "a": agent,
            "archive": None if archive is None else timedelta(days=archive),
            "erase": None if erase is None else timedelta(days=erase),
        },
    )


@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
async def test_the_sweeps_plan_reads_about_what_is_due(
    database: async_sessionmaker[DbSession], plans: str
) -> None:
    sessionmaker = database
    tag = uuid.uuid4().hex[:8]
    keeper, eraser, other = f"keeper-{tag}", f"eraser-{tag}", f"nopolicy-{tag}"
    async with sessionmaker() as db, db.begin():
        # Archives after 30 days, never erases: its archived sessions stay.
        await _policy(db, keeper, 30, None)
        await _sessions(db, keeper, "k-archived", KEPT, days_ago=200, archived=True)
        await _sessions(db, keeper, "k-due", 3, days_ago=40)
        await _sessions(db, keeper, "k-recent", KEPT, days_ago=10)
        await _sessions(db, keeper, "k-running", 5, days_ago=60, status="running")
        # Archives after a day, erases after 90.
        await _policy(db, eraser, 1, 90)
        await _sessions(db, eraser, "e-erase-archived", 1, days_ago=100, archived=True)
        await _sessions(db, eraser, "e-erase", 1, days_ago=99)
        await _sessions(db, eraser, "e-archived", KEPT, days_ago=60, archived=True)
        await _sessions(db, eraser, "e-due", 2, days_ago=5)
        await _sessions(db, eraser, "e-recent", 20, days_ago=0.5)
        # No policy: nothing of it is due, however old.
        await _policy(db, other, None, None)
        await _sessions(db, other, "o-old", KEPT, days_ago=400)
        await db.execute(text("UPDATE sessions SET finished_at = NULL WHERE status = 'running'"))
        await db.execute(text("ANALYZE sessions"))
        await db.execute(text("ANALYZE retention_policies"))

    async with sessionmaker() as db:
        due = await due_sessions(db, limit=LIMIT)
        skipping = await due_sessions(db, limit=2, skip=["e-erase-1"])
    # Oldest end first: the two erasures, the keeper's three, the eraser's two.
    assert [(d.session_id, d.action) for d in due] == [
        ("e-erase-archived-1", "erase"),
        ("e-erase-1", "erase"),
        ("k-due-1", "archive"),
        ("k-due-2", "archive"),
        ("k-due-3", "archive"),
        ("e-due-1", "archive"),
        ("e-due-2", "archive"),
    ]
    assert all(d.agent_id == (keeper if d.session_id[0] == "k" else eraser) for d in due)
    assert [d.session_id for d in skipping] == ["e-erase-archived-1", "k-due-1"]

    async with sessionmaker() as db, db.begin():
        await db.execute(text(f"SET LOCAL plan_cache_mode = {plans}"))
        plan = await explain(db, _DUE.text, _due_params(LIMIT, None))
    read = rows_read(plan["Plan"])
    # What is due (7) and each policy branch's first row past it (running sessions have no
    # end, so neither index holds them); not the 40,000 ended sessions that are not due.
    assert read <= 40, read


async def test_a_session_that_runs_again_is_due_by_its_last_end(
    database: async_sessionmaker[DbSession],
) -> None:
    """A session the reconciler ended (its workflow reset in Temporal) whose reset run goes
    on and ends later: retention counts from that later end, not from the first."""
    sessionmaker = database
    agent = f"keeper-{uuid.uuid4().hex[:8]}"
    sid = f"s-{agent}"
    async with sessionmaker() as db, db.begin():
        await _policy(db, agent, 30, None)
        await record.create_session(db, session_id=sid, agent_id=agent, goal="g", status="running")
        await record.update_session(db, sid, status="terminated", finished=True)
        await db.execute(
            text("UPDATE sessions SET finished_at = now() - interval '60 days' WHERE id = :id"),
            {"id": sid},
        )
    async with sessionmaker() as db, db.begin():
        assert [d.session_id for d in await due_sessions(db, limit=LIMIT)] == [sid]
        await record.update_session(db, sid, status="running")
        again = await record.get_session(db, sid)
        assert again is not None and again.finished_at is None
        await record.update_session(db, sid, status="completed", finished=True)
        assert await due_sessions(db, limit=LIMIT) == []
