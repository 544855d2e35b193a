"""An advisory lock's key is sent as a literal (it may ride with ``BEGIN``); through
SQLAlchemy's ``text()`` a ``:`` after a character that is no letter, digit or ``_``
started a parameter: adding a webhook for an agent named ``ops :eu`` failed ("a value is
required for bind parameter 'eu'"), as did erasing a session named ``job-:1``."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.erasure import hold_from_erasure
from vigil.activities.record.hooks import lock_agent_webhooks
from vigil.activities.record.lean import engine_of, lean_transaction, xact_lock

pytestmark = pytest.mark.integration


async def _held(sessionmaker: async_sessionmaker[DbSession], key: str) -> bool:
    """Whether another transaction holds the lock on ``key`` (asked with it bound)."""
    async with sessionmaker() as other, other.begin():
        free = await other.execute(
            text("SELECT pg_try_advisory_xact_lock_shared(hashtextextended(:k, 0))"), {"k": key}
        )
        return not free.scalar_one()


@pytest.mark.parametrize("key", ["vigil.webhooks:ops :eu", "a.:b", "x\\:y", "plain"])
async def test_a_key_with_colons_locks_itself_through_text_and_plain_sql(
    sessionmaker: async_sessionmaker[DbSession], key: str
) -> None:
    async with sessionmaker() as db, db.begin():
        await db.execute(text(f"SELECT {xact_lock(key)}"))
        assert await _held(sessionmaker, key)
    async with lean_transaction(engine_of(sessionmaker), then=f"SELECT {xact_lock(key)}"):
        assert await _held(sessionmaker, key)


async def test_the_webhook_and_erasure_locks_take_such_names(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    async with sessionmaker() as db, db.begin():
        await lock_agent_webhooks(db, "ops :eu")
        await db.execute(text(hold_from_erasure("ops :eu", "job-:1")))
        assert await _held(sessionmaker, "vigil.webhooks:ops :eu")
