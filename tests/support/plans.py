"""What a statement's plan reads, for tests that hold a read to its size: a database of
the test's own (whose statistics are only what the test makes them) and PostgreSQL's
EXPLAIN, counted in rows read or buffers touched, never timed."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.teststack import recreate_database
from vigil.workers.db import make_engine, make_sessionmaker, migrate
from vigil.workers.stack import Stack


@contextlib.asynccontextmanager
async def own_database(
    stack: Stack, name: str, *, collation: str | None = None
) -> AsyncIterator[async_sessionmaker[DbSession]]:
    """A migrated database ``name`` (one per test worker) on the test stack's server,
    sorting text by ``collation`` when one is named; dropped afterwards."""
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"{name}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = await recreate_database(base, name, collation=collation)
    await migrate(url)
    engine = make_engine(url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
        await recreate_database(base, name, drop_only=True)


async def explain(db: DbSession, statement: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The statement run under ``EXPLAIN (ANALYZE, BUFFERS)``: its plan, as JSON."""
    explained = (
        await db.execute(text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement), params)
    ).scalar_one()
    plan: dict[str, Any] = (json.loads(explained) if isinstance(explained, str) else explained)[0]
    return plan


def buffers(plan: dict[str, Any]) -> int:
    """The shared buffers the whole plan touched."""
    top = plan["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def rows_read(node: dict[str, Any]) -> int:
    """The rows a plan's scans read, in all their loops: those they returned and those
    their filters threw away."""
    own = 0
    if "Scan" in str(node["Node Type"]):
        loops = int(node.get("Actual Loops", 1))
        own = loops * (int(node["Actual Rows"]) + int(node.get("Rows Removed by Filter", 0)))
    return own + sum(rows_read(child) for child in node.get("Plans", []))
