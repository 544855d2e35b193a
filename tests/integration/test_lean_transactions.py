"""Lean transactions (activities/record/lean.py) never hand a used connection back dirty.

A lean transaction runs on a connection of the engine's pool. When the task running it
is cancelled mid-statement (a session cancelled during a model call, a recall half
cancelled because the other failed), the connection must not go back to the pool inside
the transaction: the next user would run in it, as the agent it was acting for, or find
it aborted ("commands ignored until end of transaction block") on every use. The
worker's engine pings only connections idle for a second, so nothing else catches it.

Bound connections (``bound_acting_for``) stay in the agent role between uses: they act
for the agent and settings asked for each time (sent only when they changed), never reach
the engine's own pool, and one that failed is not used again.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from tests.support.round_trips import counting
from vigil.activities.record import store as record
from vigil.activities.record.lean import LeanTransaction, lean_transaction
from vigil.activities.record.rls import bound_acting_for, lean_acting_for
from vigil.activities.record.sql import sql
from vigil.workers.db import WORKER_PING_AFTER_IDLE_SECONDS, make_engine, make_sessionmaker

pytestmark = pytest.mark.integration


async def test_a_transaction_cancelled_mid_statement_leaves_clean_connections(
    database_url: str,
) -> None:
    # One connection (and one overflow): a connection handed back dirty is met again.
    engine = make_engine(database_url, pool_size=1, ping_after_idle=WORKER_PING_AFTER_IDLE_SECONDS)
    agent = f"agent-{uuid.uuid4()}"
    started = asyncio.Event()

    async def slow(tx: LeanTransaction) -> None:
        started.set()
        await tx.execute(sql("SELECT pg_sleep(30)"))

    async def body() -> None:
        async with lean_acting_for(engine, agent) as tx:
            await slow(tx)

    async def slow_begin() -> None:  # cancelled in the round trip that opens it
        started.set()
        async with lean_transaction(engine, then="SELECT pg_sleep(30)"):
            pass

    try:
        async with engine.connect() as conn:
            owner = (await conn.execute(text("SELECT current_user"))).scalar_one()
        # Cancelled once, then again after 0..5 turns of the event loop: the second
        # cancellation lands in the clean-up (the ROLLBACK, the return to the pool).
        for opening, turns in [(body, t) for t in (None, 0, 1, 2, 3, 5)] + [
            (slow_begin, None),
            (slow_begin, 1),
        ]:
            task = asyncio.ensure_future(opening())
            await asyncio.wait_for(started.wait(), 20)
            await asyncio.sleep(0.2)  # the statement is running on the server
            task.cancel()
            if turns is not None:
                for _ in range(turns):
                    await asyncio.sleep(0)
                task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            started.clear()
            for _ in range(2):  # whatever connection the pool hands out next
                async with engine.connect() as conn:
                    row = (
                        await conn.execute(
                            text(
                                "SELECT current_user, "
                                "coalesce(current_setting('vigil.agent_id', true), '')"
                            )
                        )
                    ).one()
                assert tuple(row) == (owner, "")
                async with lean_acting_for(engine, agent) as tx:
                    assert (await tx.execute(sql("SELECT current_user"))).scalar_one() == (
                        "vigil_agent"
                    )
    finally:
        await engine.dispose()


_WHO = sql(
    "SELECT current_user AS role, current_setting('vigil.agent_id', true) AS agent, "
    "current_setting('hnsw.ef_search', true) AS ef, pg_backend_pid() AS pid"
)


async def test_bound_connections_act_for_the_agent_and_settings_asked_each_time(
    database_url: str,
) -> None:
    # Pinging only connections idle a minute: the round trips counted are the block's.
    engine = make_engine(database_url, pool_size=1, ping_after_idle=60)
    first, second = f"agent-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    try:
        async with engine.connect() as conn:
            owner = (await conn.execute(text("SELECT current_user"))).scalar_one()
        async with make_sessionmaker(engine).begin() as db:
            for agent in (first, second):
                await record.create_session(
                    db, session_id=agent, agent_id=agent, goal="g", status="running"
                )
        seen, trips = [], []
        for agent, settings, ef in [
            (first, {"hnsw.ef_search": "77"}, "77"),
            (first, {"hnsw.ef_search": "77"}, "77"),  # holds them already: nothing sent
            (second, None, "77"),  # a setting not named keeps what an earlier use set
            (first, {"hnsw.ef_search": "90"}, "90"),
        ]:
            with counting() as counted:
                async with bound_acting_for(engine, agent, settings=settings) as db:
                    who = (await db.execute(_WHO)).one()
                    visible = (await db.execute(sql("SELECT id FROM sessions"))).scalars().all()
                    # Each statement is a transaction of its own.
                    xids = [
                        (await db.execute(sql("SELECT pg_current_xact_id()::text"))).scalar()
                        for _ in range(2)
                    ]
            assert (who.role, who.agent, who.ef) == ("vigil_agent", agent, ef)
            assert visible == [agent]  # row-level security: only its own session
            assert xids[0] != xids[1]
            seen.append(who.pid)
            trips.append(counted.round_trips)
        assert len(set(seen)) == 1  # one connection, re-bound as needed
        assert trips == [5, 4, 5, 5]  # four statements, and the binding when it changed
        # The engine's own connections never act for anyone.
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT current_user, coalesce(current_setting('vigil.agent_id', true), '')"
                    )
                )
            ).one()
        assert tuple(row) == (owner, "")
        await engine.dispose()  # and disposing of the engine closes the bound ones
        watcher = make_engine(database_url)
        async with watcher.connect() as conn:
            for _ in range(50):
                left = (
                    await conn.execute(
                        text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": seen[0]},
                    )
                ).scalar_one()
                if not left:
                    break
                await asyncio.sleep(0.1)
        await watcher.dispose()
        assert left == 0
    finally:
        await engine.dispose()


async def test_a_bound_connection_that_failed_or_was_cancelled_is_not_used_again(
    database_url: str,
) -> None:
    engine = make_engine(database_url, pool_size=1, ping_after_idle=WORKER_PING_AFTER_IDLE_SECONDS)
    agent = f"agent-{uuid.uuid4()}"

    async def pid() -> int:
        async with bound_acting_for(engine, agent) as db:
            who = (await db.execute(_WHO)).one()
        assert (who.role, who.agent) == ("vigil_agent", agent)
        return int(who.pid)

    async def sleeping() -> None:
        async with bound_acting_for(engine, agent) as db:
            await db.execute(sql("SELECT pg_sleep(30)"))

    try:
        before = await pid()
        with pytest.raises(Exception, match="division by zero"):
            async with bound_acting_for(engine, agent) as db:
                await db.execute(sql("SELECT 1 / 0"))
        after_error = await pid()
        assert after_error != before
        task = asyncio.ensure_future(sleeping())
        await asyncio.sleep(0.5)  # the statement is running on the server
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pid() not in (before, after_error)
    finally:
        await engine.dispose()
