"""Pooled connections are pinged when they idled, not on every use.

A connection that sat idle is pinged before it is handed out, and a dead one is replaced
without an error. One used moments ago is not pinged (a round trip saved per transaction):
if it died meanwhile, its statement fails with a transient error (retried by the
activity) and the pool is renewed, so the next use works.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from vigil.activities.record.retry import is_transient_db_error
from vigil.workers.db import make_engine

pytestmark = pytest.mark.integration


async def _pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(database_url: str, pid: int) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def test_an_idle_connection_that_died_is_replaced_before_use(database_url: str) -> None:
    # The default: even a connection used a moment ago (a database restarted in between)
    # is pinged, since a reader of the API or the CLI does not retry.
    engine = make_engine(database_url, pool_size=1)
    try:
        dead = await _pid(engine)
        await _terminate(database_url, dead)
        assert await _pid(engine) != dead  # no error: the ping found it dead
    finally:
        await engine.dispose()


async def test_a_live_pooled_connection_is_reused_after_its_ping(database_url: str) -> None:
    # A ping that failed on a live connection would open a new one for every transaction.
    engine = make_engine(database_url, pool_size=1)
    try:
        pids = {await _pid(engine) for _ in range(3)}
        assert len(pids) == 1
    finally:
        await engine.dispose()


async def test_a_connection_used_moments_ago_is_not_pinged_and_its_death_is_transient(
    database_url: str,
) -> None:
    engine = make_engine(database_url, pool_size=1, ping_after_idle=3600.0)
    try:
        dead = await _pid(engine)
        await _terminate(database_url, dead)
        with pytest.raises(DBAPIError) as failed:
            await _pid(engine)
        assert is_transient_db_error(failed.value)
        assert await _pid(engine) != dead
    finally:
        await engine.dispose()
