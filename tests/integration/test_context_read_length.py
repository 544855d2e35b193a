"""The model call's read of the record (``vigil_context_read``) costs the same at step 10
and at step 5,000 of a session (issue #12).

A worker holds the session's window and asks only for what is newer than it, and the
newest summary's key. Both reads used to filter every row of the session: PostgreSQL runs
a function's statements with a plan made once for any argument (after five calls, when
that plan looks no dearer), and that plan read the session's messages and events by
session alone, so a 1,000-step session's read took milliseconds more than a new one's.
What the read touches is counted here in PostgreSQL's buffers, never timed, with the plan
made once for any argument (what a worker's long-lived connection settles on) under
three states of PostgreSQL's statistics, and with plans made for each call's arguments.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.plans import buffers, explain, own_database
from vigil.activities.record.rls import acting_for
from vigil.activities.record.store import _CONTEXT_READ, create_session
from vigil.schema import event_kinds
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

SUMMARY_EVERY = 7
"""A summary event every this many steps, as a long session with a small window has."""

COUNTED_READS = 5
"""Reads counted per session (the fewest buffers of them is taken)."""

EXTRA_BUFFERS = 12
"""How far apart the two sessions' reads may be: a deeper index (one level more) on each
of the few lookups, never a page per row of either session."""


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[async_sessionmaker[DbSession]]:
    """A database of this test's own: its statistics are only what the test makes them
    (the shared test database's are whatever earlier tests left)."""
    async with own_database(stack, "vigil_test_read_length") as sessionmaker:
        yield sessionmaker


async def _new_session(sessionmaker: async_sessionmaker[DbSession], agent: str) -> str:
    session = f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")
    return session


async def _steps(
    sessionmaker: async_sessionmaker[DbSession], agent: str, session: str, first: int, last: int
) -> int:
    """Steps ``first`` to ``last`` in the session's record (an assistant message and a tool
    message, a model event and a tool event each; a summary every SUMMARY_EVERY steps);
    the newest seq."""
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text(
                "INSERT INTO messages (session_id, agent_id, seq, role, content, step) "
                "SELECT :sid, :agent, n, CASE WHEN n % 2 = 0 THEN 'assistant' ELSE 'tool' END, "
                "'words of message ' || n, (n + 1) / 2 "
                "FROM generate_series(CAST(:low AS int), CAST(:high AS int)) AS n"
            ),
            {"sid": session, "agent": agent, "low": 2 * first - 1, "high": 2 * last},
        )
        await db.execute(
            text(
                "INSERT INTO events (session_id, agent_id, key, kind, step, payload) "
                "SELECT :sid, :agent, k.prefix || s, k.kind, s, '{}'::jsonb "
                "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS s, "
                "(VALUES ('model:', :model), ('tool:', :tool), ('summary:', :summary)) "
                "AS k(prefix, kind) "
                "WHERE k.kind <> :summary OR s % :every = 0"
            ),
            {
                "sid": session,
                "agent": agent,
                "first": first,
                "last": last,
                "model": event_kinds.MODEL_CALL,
                "tool": event_kinds.TOOL_CALL,
                "summary": event_kinds.CONTEXT_SUMMARY,
                "every": SUMMARY_EVERY,
            },
        )
    return 2 * last


async def _analyze(sessionmaker: async_sessionmaker[DbSession]) -> None:
    async with sessionmaker() as db, db.begin():
        await db.execute(text("ANALYZE messages, events"))


async def _buffers(
    sessionmaker: async_sessionmaker[DbSession],
    agent: str,
    session: str,
    newest: int,
    plans: str,
    gaps: list[int],
) -> tuple[int, dict[str, object]]:
    """The buffers one read of a worker holding the window up to two messages ago (but
    ``gaps``) touches, and what it read, with PostgreSQL's plans for the function's
    statements made as ``plans`` says (``force_generic_plan``: the plan made once for any
    argument)."""
    params = {
        "sid": session,
        "reply_seq": newest + 1,
        "kinds": event_kinds.stored_as(event_kinds.CONTEXT_SUMMARY),
        "held": "summary:0",
        "after": newest - 2,
        "gaps": gaps,
        "recent": 50,
        "artifacts": False,
        "ids": None,
        "lock_ms": None,
    }
    async with acting_for(sessionmaker, agent) as db:
        await db.execute(text(f"SET LOCAL plan_cache_mode = {plans}"))
        for _ in range(3):  # the catalogs and the function's plans, cached before counting
            row = (await db.execute(_CONTEXT_READ, params)).mappings().one()
        counts = []
        # The fewest of a few reads: a read that plans a statement again (statistics
        # gathered meanwhile by autovacuum) also counts the catalogs' pages it reads.
        for _ in range(COUNTED_READS):
            counts.append(buffers(await explain(db, _CONTEXT_READ.text, params)))
    return min(counts), dict(row)


STATISTICS = ("none", "taken-when-short", "taken-when-long")
"""What PostgreSQL knows of the tables when the long session is read: nothing (a new
database), statistics from before the session grew (every session looked short), or
statistics with the long session among their most common values."""


@pytest.mark.parametrize(
    ("plans", "statistics"),
    [
        *(("force_generic_plan", statistics) for statistics in STATISTICS),
        # A plan made for each call's arguments, from statistics that know the session.
        # (From statistics that do not know the agent yet, such a plan may read the
        # agent's rows by their index instead: until autovacuum's next analysis.)
        ("force_custom_plan", "taken-when-long"),
    ],
)
async def test_a_long_sessions_context_read_touches_what_a_short_ones_does(
    database: async_sessionmaker[DbSession], plans: str, statistics: str
) -> None:
    sessionmaker = database
    agent = f"agent-{uuid.uuid4()}"
    # The short one first: its rows are the oldest, behind all of the long one's.
    short, long = await _new_session(sessionmaker, agent), await _new_session(sessionmaker, agent)
    short_newest = await _steps(sessionmaker, agent, short, 1, 20)
    await _steps(sessionmaker, agent, long, 1, 20)
    if statistics == "taken-when-short":
        await _analyze(sessionmaker)
    long_newest = await _steps(sessionmaker, agent, long, 21, 3_000)
    if statistics == "taken-when-long":
        await _analyze(sessionmaker)

    # The usual read: nothing missing from the kept window.
    short_buffers, short_read = await _buffers(
        sessionmaker, agent, short, short_newest, plans, gaps=[]
    )
    long_buffers, long_read = await _buffers(sessionmaker, agent, long, long_newest, plans, gaps=[])
    assert abs(long_buffers - short_buffers) <= EXTRA_BUFFERS, (short_buffers, long_buffers)

    # The same answers either way: the messages after the held window, in order, and the
    # newest summary (its key differs from the one held).
    for read, newest, steps in ((short_read, short_newest, 20), (long_read, long_newest, 3_000)):
        assert [m["seq"] for m in read["new_messages"]] == [newest - 1, newest]
        newest_summary = steps - steps % SUMMARY_EVERY
        assert read["newest_summary_key"] == f"summary:{newest_summary}"
        assert read["newest_summary"]["kind"] == event_kinds.CONTEXT_SUMMARY
        assert read["reply_written"] is False

    # A window with gaps gets them too (a gap at or past the window's end is read once).
    _, gapped = await _buffers(
        sessionmaker, agent, long, long_newest, plans, gaps=[long_newest - 5, long_newest]
    )
    assert [m["seq"] for m in gapped["new_messages"]] == [
        long_newest - 5,
        long_newest - 1,
        long_newest,
    ]


OTHER_AGENTS = 2_000
"""Agents that PostgreSQL's statistics know, each with a short session: as many agents as
sessions, so that to a plan an agent's index looks as narrow as a session's."""


async def _other_agents(sessionmaker: async_sessionmaker[DbSession]) -> None:
    """OTHER_AGENTS agents with a session of three steps each, in one go."""
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text(
                "INSERT INTO agents (id, name) SELECT 'other-' || a, 'other-' || a "
                "FROM generate_series(1, CAST(:n AS int)) AS a"
            ),
            {"n": OTHER_AGENTS},
        )
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status) "
                "SELECT 's-other-' || a, 'other-' || a, 'g', 'running' "
                "FROM generate_series(1, CAST(:n AS int)) AS a"
            ),
            {"n": OTHER_AGENTS},
        )
        await db.execute(
            text(
                "INSERT INTO messages (session_id, agent_id, seq, role, content, step) "
                "SELECT 's-other-' || a, 'other-' || a, n, 'assistant', 'words', n "
                "FROM generate_series(1, CAST(:n AS int)) AS a, generate_series(1, 6) AS n"
            ),
            {"n": OTHER_AGENTS},
        )
        await db.execute(
            text(
                "INSERT INTO events (session_id, agent_id, key, kind, step, payload) "
                "SELECT 's-other-' || a, 'other-' || a, 'model:' || n, :model, n, '{}'::jsonb "
                "FROM generate_series(1, CAST(:n AS int)) AS a, generate_series(1, 3) AS n"
            ),
            {"n": OTHER_AGENTS, "model": event_kinds.MODEL_CALL},
        )


@pytest.mark.parametrize("plans", ["force_generic_plan", "force_custom_plan"])
async def test_a_sessions_context_read_touches_no_more_for_an_agent_with_many_rows(
    database: async_sessionmaker[DbSession], plans: str
) -> None:
    """A short session's read costs the same whether its agent has nothing else or a
    3,000-step session besides it, while PostgreSQL's statistics do not know the agent
    yet (a new agent, until autovacuum's next analysis: on a large table that may be
    long after the agent has grown)."""
    sessionmaker = database
    await _other_agents(sessionmaker)
    await _analyze(sessionmaker)
    busy, lone = f"agent-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    busy_short, busy_long = (
        await _new_session(sessionmaker, busy),
        await _new_session(sessionmaker, busy),
    )
    lone_short = await _new_session(sessionmaker, lone)
    busy_newest = await _steps(sessionmaker, busy, busy_short, 1, 20)
    lone_newest = await _steps(sessionmaker, lone, lone_short, 1, 20)
    await _steps(sessionmaker, busy, busy_long, 1, 3_000)

    lone_buffers, lone_read = await _buffers(
        sessionmaker, lone, lone_short, lone_newest, plans, gaps=[]
    )
    busy_buffers, busy_read = await _buffers(
        sessionmaker, busy, busy_short, busy_newest, plans, gaps=[]
    )
    assert abs(busy_buffers - lone_buffers) <= EXTRA_BUFFERS, (lone_buffers, busy_buffers)
    for read, newest in ((lone_read, lone_newest), (busy_read, busy_newest)):
        assert [m["seq"] for m in read["new_messages"]] == [newest - 1, newest]
        assert read["newest_summary_key"] == f"summary:{20 - 20 % SUMMARY_EVERY}"
