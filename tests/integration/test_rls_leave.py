"""A block acting for an agent inside a caller's transaction is switched back after it;
when the block failed on a connection its failure broke (a statement cut short: a
cancel, a time limit), the switch back cannot be made, and its error took the place of
the block's own: ``PendingRollbackError: Can't reconnect until invalid transaction is
rolled back``, which a tool call then reported as its crash (a write made, recorded as
failed; the session ended ``failed``) instead of what happened."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.rls import acting_inside

pytestmark = pytest.mark.integration


async def test_a_block_cut_short_fails_with_its_own_error(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    async with sessionmaker() as db:
        await db.begin()
        with pytest.raises(TimeoutError):
            async with acting_inside(db, "agent-cut-short"):
                async with asyncio.timeout(0.2):
                    await db.execute(text("SELECT pg_sleep(5)"))
        await db.rollback()
        # The session is usable again once rolled back, as the caller's own rollback does.
        assert (await db.execute(text("SELECT 1"))).scalar_one() == 1
