"""Whether a statement of a database waits for a lock (PostgreSQL's ``pg_stat_activity``):
for tests that hold a lock and need to know something is held up by it."""

from __future__ import annotations

import asyncpg


async def waiting_for_lock(url: str, statement: str = "%") -> bool | None:
    """Whether a statement of ``url``'s database (its text ``ILIKE statement``) waits for a
    lock; None when none does (for ``until``)."""
    conn = await asyncpg.connect(url)
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND query ILIKE $1",
            statement,
        )
    finally:
        await conn.close()
    return waiting > 0 or None
