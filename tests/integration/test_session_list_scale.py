"""A page of one agent's sessions, newest first (`vigil list --agent`, the API's
``GET /sessions?agent=``), reads about a page of rows however many sessions there are:
an agent whose schedule starts a session a minute has half a million in a year. Before an
index on (agent, time, id), the listing walked all sessions newest first and skipped the
other agents' (40 rows read for each one listed, among 40 agents alike), or read all of
the agent's and sorted them. The rows its plan reads are counted (PostgreSQL's EXPLAIN),
never timed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.plans import explain, own_database, rows_read
from vigil.activities.record.sessions import _LIST, MAX_PAGE, _list_params, list_sessions
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

AGENTS = 40
SESSIONS = 40_000
"""Started one after another by the agents in turn."""
PAGE = 50


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[async_sessionmaker[DbSession]]:
    async with own_database(stack, "vigil_test_list") as sessionmaker:
        yield sessionmaker


async def _page_rows_read(
    sessionmaker: async_sessionmaker[DbSession], agent: str, plans: str, cursor: str | None
) -> int:
    """The rows the page's statement reads, with PostgreSQL's plans made as ``plans``
    says."""
    params = _list_params(agent=agent, cursor=cursor, limit=PAGE)
    async with sessionmaker() as db, db.begin():
        await db.execute(text(f"SET LOCAL plan_cache_mode = {plans}"))
        plan = await explain(db, _LIST.text, params)
    return rows_read(plan["Plan"])


@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
async def test_a_page_of_an_agents_sessions_reads_about_a_page(
    database: async_sessionmaker[DbSession], plans: str
) -> None:
    assert PAGE <= MAX_PAGE
    sessionmaker = database
    prefix = f"agent-{uuid.uuid4().hex[:8]}-"
    listed = f"{prefix}0"
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text(
                "INSERT INTO agents (id, name) SELECT :p || a, :p || a "
                "FROM generate_series(0, CAST(:agents AS int) - 1) AS a"
            ),
            {"p": prefix, "agents": AGENTS},
        )
        # Session n (the smallest is the newest) is agent n % AGENTS's.
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status, created_at) "
                "SELECT 's-' || n, :p || (n % CAST(:agents AS int)), 'g', 'completed', "
                "now() - make_interval(secs => n) FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"p": prefix, "agents": AGENTS, "n": SESSIONS},
        )
        await db.execute(text("ANALYZE sessions"))

    async with sessionmaker() as db:
        first = await list_sessions(db, agent=listed, limit=PAGE)
        second = await list_sessions(db, agent=listed, limit=PAGE, cursor=first.next_cursor)
    # Newest first (the smallest n is the newest), only the agent's, and the second page
    # goes on where the first stopped.
    ids = [f"s-{n}" for n in range(AGENTS, AGENTS * (2 * PAGE + 1), AGENTS)]
    assert [s.id for s in first.rows] == ids[:PAGE]
    assert [s.id for s in second.rows] == ids[PAGE:]

    for cursor in (None, first.next_cursor):
        rows = await _page_rows_read(sessionmaker, listed, plans, cursor)
        assert rows <= PAGE + 1, (cursor, rows)


@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
async def test_a_page_of_the_older_of_two_agents_reads_about_a_page(
    database: async_sessionmaker[DbSession], plans: str
) -> None:
    """Two agents with half of the sessions each, the listed one's all older than the
    other's: a walk of all sessions newest first would read the other's half first."""
    sessionmaker = database
    prefix = f"agent-{uuid.uuid4().hex[:8]}-"
    older, newer = f"{prefix}older", f"{prefix}newer"
    half = SESSIONS // 2
    async with sessionmaker() as db, db.begin():
        for agent in (older, newer):
            await db.execute(
                text("INSERT INTO agents (id, name) VALUES (:a, :b)"), {"a": agent, "b": agent}
            )
        # Session n (the smallest is the newest): the newer agent's up to half, then the
        # older agent's.
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status, created_at) "
                "SELECT 's-' || n, "
                "CASE WHEN n <= CAST(:half AS int) THEN :newer ELSE :older END, "
                "'g', 'completed', now() - make_interval(secs => n) "
                "FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"half": half, "newer": newer, "older": older, "n": SESSIONS},
        )
        await db.execute(text("ANALYZE sessions"))

    async with sessionmaker() as db:
        first = await list_sessions(db, agent=older, limit=PAGE)
        second = await list_sessions(db, agent=older, limit=PAGE, cursor=first.next_cursor)
    ids = [f"s-{n}" for n in range(half + 1, half + 2 * PAGE + 1)]
    assert [s.id for s in first.rows] == ids[:PAGE]
    assert [s.id for s in second.rows] == ids[PAGE:]

    for cursor in (None, first.next_cursor):
        rows = await _page_rows_read(sessionmaker, older, plans, cursor)
        assert rows <= PAGE + 1, (cursor, rows)
