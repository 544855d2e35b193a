"""Lean transactions (activities/record/lean.py) never hand a used connection back dirty.

A lean transaction runs on a connection of the engine's pool. When the task running it
is cancelled mid-statement (a session cancelled during a model call, a recall half
cancelled because the other failed), the connection must not go back to the pool inside
the transaction: the next user would run in it, as the agent it was acting for, or find
it aborted ("commands ignored until end of transaction block") on every use. The
worker's engine pings only connections idle for a second, so nothing else catches it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from vigil.activities.record.lean import LeanTransaction, lean_transaction
from vigil.activities.record.rls import lean_acting_for
from vigil.activities.record.sql import sql
from vigil.workers.db import WORKER_PING_AFTER_IDLE_SECONDS, make_engine

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
