"""A message by key finds its conversation's sessions by index, however many sessions its
agent has, in a database that sorts text by a locale (as many PostgreSQL installs and
images are set up, e.g. ``C.UTF-8`` or ``en_US.UTF-8``), not only in one that sorts by
bytes (``C``, as the embedded stack's).

The key's sessions are its first id and that id followed by ``-2``, ``-3``...
(``workers/keyed.py``). A prefix is found by an index only when the index compares bytes:
in a locale's order it is not a range. Without one, the lookup read every session of the
agent: 1,064 buffers at 100,000 sessions in a probe, against 7 with one. What the lookup
touches is counted in PostgreSQL's buffers, never timed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.plans import buffers, explain, own_database
from vigil.activities.record import sessions as record
from vigil.workers.keyed import keyed_session_id
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

LOCALE = "C.UTF-8"
"""A locale every Debian system has, sorting text by code point but not byte-wise to
PostgreSQL's planner: it treats only ``C`` and ``POSIX`` as byte order."""

BUSY_SESSIONS = 20_000
ALLOWED_BUFFERS = 20
"""A few index pages and the rows found: far below a page per ten of the agent's
sessions."""


@pytest.fixture
async def locale_database(stack: Stack) -> AsyncIterator[async_sessionmaker[DbSession]]:
    async with own_database(stack, "vigil_test_keyed", collation=LOCALE) as sessionmaker:
        yield sessionmaker


async def _lookup_buffers(
    sessionmaker: async_sessionmaker[DbSession], agent: str, first: str
) -> tuple[int, dict[int, str]]:
    """The buffers the key's lookup touches (the fewest of three, after a warm one), and
    what it found."""
    async with sessionmaker() as db:
        found = await record.keyed_generations(db, agent, first)
        counts = []
        for _ in range(3):
            plan = await explain(
                db,
                "SELECT id, status FROM sessions "
                "WHERE agent_id = :agent AND (id = :first OR starts_with(id, :prefix))",
                {"agent": agent, "first": first, "prefix": f"{first}-"},
            )
            counts.append(buffers(plan))
    return min(counts), found


async def test_a_keys_sessions_are_found_by_index_in_a_locale_sorted_database(
    locale_database: async_sessionmaker[DbSession],
) -> None:
    sessionmaker = locale_database
    agent = f"busy-{uuid.uuid4().hex[:8]}"
    first = keyed_session_id(agent, "customer-7")
    async with sessionmaker() as db, db.begin():
        collation = (
            await db.execute(
                text("SELECT datcollate FROM pg_database WHERE datname = current_database()")
            )
        ).scalar_one()
        assert collation == LOCALE
        await db.execute(
            text("INSERT INTO agents (id, name) VALUES (:a, :name)"), {"a": agent, "name": agent}
        )
        # Many other conversations of the same agent, each with a later generation or not.
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status) "
                "SELECT :base || md5(n::text) || CASE WHEN n % 3 = 0 THEN '-2' ELSE '' END, "
                ":a, 'g', 'completed' FROM generate_series(1, CAST(:n AS int)) AS n"
            ),
            {"base": first[: first.rindex("-") + 1], "a": agent, "n": BUSY_SESSIONS},
        )
        # The key's own: its first session ended, its second runs; "-02" and "-x" are not
        # generations of it.
        for sid, status in (
            (first, "completed"),
            (f"{first}-2", "running"),
            (f"{first}-02", "running"),
            (f"{first}-x", "running"),
        ):
            await db.execute(
                text(
                    "INSERT INTO sessions (id, agent_id, goal, status) "
                    "VALUES (:sid, :a, 'g', :status)"
                ),
                {"sid": sid, "a": agent, "status": status},
            )
        await db.execute(text("ANALYZE sessions"))

    buffers, found = await _lookup_buffers(sessionmaker, agent, first)
    assert found == {1: "completed", 2: "running"}
    assert buffers <= ALLOWED_BUFFERS, buffers
