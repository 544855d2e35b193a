"""An upgrade builds its indexes while the tables take writes.

A deployment's workers keep writing sessions and events while ``vigil stack up`` migrates
the database. A plain ``CREATE INDEX`` waits for the writers' open transactions and then
holds every later write off until its build ends: on a table of millions of rows, minutes
of stalled workers. The migrations that index tables already holding rows build (and drop)
their indexes concurrently (``schema/online_ddl.py``).

Each migration is run while a writer's transaction stays open on the tables: the
migration waits for it, as either kind of build does, and meanwhile another writer must
still get the lock every insert and update takes (it is given 5 s; a plain build queued
ahead of it would hold it off until the first writer ends). Locks are observed, nothing
is timed.
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
from vigil.workers.db import alembic_config
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

BEFORE = "20261203_19"
STEPS = [
    ("20261204_20", "events", ["ix_events_session_id_kind_newest"]),
    ("20261204_21", "sessions", ["ix_sessions_agent_id_created_at_id", "ix_sessions_id_prefix"]),
]


def _upgrade(url: str, revision: str) -> None:
    command.upgrade(alembic_config(url), revision)


async def test_an_upgrade_builds_its_indexes_while_the_tables_take_writes(stack: Stack) -> None:
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"vigil_test_online_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = await recreate_database(base, name)
    try:
        await asyncio.to_thread(_upgrade, url, BEFORE)
        for revision, table, indexes in STEPS:
            holder = await asyncpg.connect(url)  # a worker's transaction, open meanwhile
            migration: asyncio.Future[None] | None = None
            try:
                await holder.execute("BEGIN; LOCK TABLE sessions, events IN ROW EXCLUSIVE MODE")
                migration = asyncio.ensure_future(asyncio.to_thread(_upgrade, url, revision))
                await until(
                    lambda: waiting_for_lock(url, "%INDEX%"),
                    what=f"{revision} waiting for the writer",
                )
                writer = await asyncpg.connect(url)
                try:
                    await writer.execute("SET lock_timeout = '5s'")
                    async with writer.transaction():
                        # What every INSERT, UPDATE and DELETE on the table takes.
                        await writer.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
                finally:
                    await writer.close()
            finally:
                await holder.close()  # its transaction ends, and the migration goes on
                if migration is not None:
                    await migration
            conn = await asyncpg.connect(url)
            try:
                valid = await conn.fetch(
                    "SELECT c.relname, i.indisvalid FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY($1::text[])",
                    indexes,
                )
            finally:
                await conn.close()
            assert sorted((r["relname"], r["indisvalid"]) for r in valid) == [
                (index, True) for index in sorted(indexes)
            ]
    finally:
        await recreate_database(base, name, drop_only=True)


async def test_an_index_a_failed_build_left_invalid_is_built_again(stack: Stack) -> None:
    """A concurrent build that fails (here: a unique index over duplicates) leaves an
    invalid index of its name; the migration drops it and builds its own, and a downgrade
    and a second upgrade go through too."""
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"vigil_test_online_invalid_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = await recreate_database(base, name)
    try:
        await asyncio.to_thread(_upgrade, url, "20261204_20")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO agents (id, name) VALUES ('a', 'a')")
            await conn.execute(
                "INSERT INTO sessions (id, agent_id, goal, status) "
                "VALUES ('s1', 'a', 'g', 'running'), ('s2', 'a', 'g', 'running')"
            )
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "CREATE UNIQUE INDEX CONCURRENTLY ix_sessions_id_prefix ON sessions (agent_id)"
                )
            assert await _definition(conn, "ix_sessions_id_prefix") == (False, "agent_id")
            await asyncio.to_thread(_upgrade, url, "head")
            assert await _definition(conn, "ix_sessions_id_prefix") == (
                True,
                "id text_pattern_ops",
            )
            await asyncio.to_thread(command.downgrade, alembic_config(url), BEFORE)
            assert await _definition(conn, "ix_sessions_agent_id") == (True, "agent_id")
            assert await _definition(conn, "ix_sessions_id_prefix") is None
            await asyncio.to_thread(_upgrade, url, "head")
            assert await _definition(conn, "ix_sessions_id_prefix") == (
                True,
                "id text_pattern_ops",
            )
            assert await _definition(conn, "ix_sessions_agent_id") is None
        finally:
            await conn.close()
    finally:
        await recreate_database(base, name, drop_only=True)


async def _definition(conn: asyncpg.Connection, index: str) -> tuple[bool, str] | None:
    """Whether the index is valid, and what it indexes (None: there is none)."""
    row = await conn.fetchrow(
        "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) AS ddl FROM pg_index i "
        "WHERE i.indexrelid = to_regclass($1)",
        index,
    )
    if row is None:
        return None
    return bool(row["indisvalid"]), str(row["ddl"]).rsplit("(", 1)[1].rstrip(")")
