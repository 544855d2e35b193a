"""An upgrade that needs a table's strongest lock never holds the table's writers off.

An ``ALTER TABLE`` (migration 20261206_26 alters ``messages`` and ``memories``) waits for
the transactions open on its table, and while it waits every later reader and writer of
the table queues behind it: one long transaction of an old build's worker would stall all
the others for as long as it stays open. vigil's upgrade waits for such a lock a short
while at a time (``lock_timeout``), giving the queue back between tries, and gives up with
a clear error, leaving the database as it was, when the lock never comes.

Locks are observed and ordered; no test asserts a time.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest
from alembic import command

from tests.support.locks import waiting_for_lock
from tests.support.sessions import until
from tests.support.teststack import recreate_database
from vigil.workers.db import MigrationLocked, alembic_config, migrate_sync
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

BEFORE = "20261206_25"


async def _revision(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


async def _database(stack: Stack, what: str) -> tuple[str, str, str]:
    """A database at the revision before, its server's URL, name and URL."""
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"vigil_test_lockwait_{what}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = await recreate_database(base, name)
    await asyncio.to_thread(command.upgrade, alembic_config(url), BEFORE)
    return base, name, url


async def test_writers_go_on_while_an_upgrade_waits_for_a_long_transaction(stack: Stack) -> None:
    base, name, url = await _database(stack, "writers")
    holder = await asyncpg.connect(url)  # an old worker's long read of the table
    migration: asyncio.Future[None] | None = None
    try:
        await holder.execute("BEGIN; LOCK TABLE messages IN ACCESS SHARE MODE")
        migration = asyncio.ensure_future(
            asyncio.to_thread(migrate_sync, url, lock_timeout_ms=300, give_up_after=600)
        )
        await until(lambda: waiting_for_lock(url, "%ALTER TABLE%"), what="the upgrade waiting")
        # Another worker's insert: it takes the table's ROW EXCLUSIVE lock, which a plain
        # ALTER waiting ahead of it would hold off until the long transaction ended.
        for _ in range(3):
            writer = await asyncpg.connect(url)
            try:
                await writer.execute("SET lock_timeout = '10s'")
                async with writer.transaction():
                    await writer.execute("LOCK TABLE messages IN ROW EXCLUSIVE MODE")
            finally:
                await writer.close()
        assert not migration.done(), "the upgrade goes on waiting, a try at a time"
        assert await _revision(url) == BEFORE
    finally:
        await holder.close()  # the long transaction ends: the next try takes the lock
        if migration is not None:
            await migration
    try:
        assert await _revision(url) != BEFORE
        conn = await asyncpg.connect(url)
        try:
            triggers = await conn.fetchval(
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'words_of_row'"
            )
        finally:
            await conn.close()
        assert triggers == 2
    finally:
        await recreate_database(base, name, drop_only=True)


async def test_an_upgrade_that_never_gets_its_lock_gives_up_and_changes_nothing(
    stack: Stack,
) -> None:
    base, name, url = await _database(stack, "giveup")
    holder = await asyncpg.connect(url)
    try:
        await holder.execute("BEGIN; LOCK TABLE messages IN ACCESS SHARE MODE")
        with pytest.raises(MigrationLocked) as refused:
            await asyncio.to_thread(migrate_sync, url, lock_timeout_ms=200, give_up_after=1)
        said = str(refused.value)
        assert "lock" in said and "pg_stat_activity" in said, said
        await holder.execute("COMMIT")
        assert await _revision(url) == BEFORE
        conn = await asyncpg.connect(url)
        try:
            generated = await conn.fetchval(
                "SELECT attgenerated FROM pg_attribute "
                "WHERE attrelid = 'messages'::regclass AND attname = 'tsv'"
            )
        finally:
            await conn.close()
        assert generated == b"s", "the generated column of the revision before is kept"
        # The lock free, the same upgrade goes through.
        await asyncio.to_thread(migrate_sync, url)
        assert await _revision(url) != BEFORE
    finally:
        await holder.close()
        await recreate_database(base, name, drop_only=True)
