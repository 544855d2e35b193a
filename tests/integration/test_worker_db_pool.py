"""The worker's PostgreSQL pool: ``worker_db_pool_size`` connections stay open for its
activities; a burst past them opens as many more, closed once it has passed."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from vigil.workers.settings import Settings
from vigil.workers.worker import runtime

pytestmark = pytest.mark.integration


async def test_a_burst_past_the_pool_keeps_only_the_pool_open(settings: Settings) -> None:
    kept, burst = 3, 5
    async with runtime(settings.model_copy(update={"worker_db_pool_size": kept})) as rt:
        engine = rt.engine
        inside = asyncio.Event()
        pids: list[int] = []

        async def hold() -> None:
            async with engine.connect() as conn:
                pids.append((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
                if len(pids) == burst:
                    inside.set()
                await inside.wait()  # all at once: the pool and some past it

        await asyncio.wait_for(asyncio.gather(*[hold() for _ in range(burst)]), timeout=30)
        assert len(set(pids)) == burst
        pool = engine.sync_engine.pool
        assert pool.checkedin() == kept  # the rest were closed on their way back
        async with engine.connect() as conn:
            alive = (
                await conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:p)"),
                    {"p": pids},
                )
            ).scalar_one()
        assert alive == kept
