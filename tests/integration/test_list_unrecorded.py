"""`list` shows sessions Temporal runs that have no record row yet, asking the record
about all of them in one query (not one per workflow)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.sessions import running_worker, start
from vigil.activities.record import sessions as session_reads
from vigil.activities.record import store
from vigil.schema.payloads import StartSessionInput
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_recorded_ids_names_the_recorded_ones(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-rec-{uuid.uuid4().hex[:8]}"
    ids = [f"rec-{uuid.uuid4().hex[:8]}-{n}" for n in range(3)]
    async with sessionmaker() as db, db.begin():
        for sid in ids[:2]:
            await store.create_session(
                db, session_id=sid, agent_id=agent, goal="g", status="running"
            )
    async with sessionmaker() as db:
        assert await session_reads.recorded_ids(db, [*ids, "no-such-session"]) == set(ids[:2])
        assert await session_reads.recorded_ids(db, []) == set()


async def test_unrecorded_sessions_cost_one_record_query(settings: Settings) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    vigil = await VigilClient.connect(settings)
    queue = f"tq-nobody-{uuid.uuid4().hex[:8]}"
    arg = StartSessionInput(agent_id=f"agent-unrec-{uuid.uuid4().hex[:8]}", goal="wait")
    handles = [
        await start(vigil.temporal, queue, arg, session_id=f"unrec-{uuid.uuid4().hex[:8]}")
        for _ in range(3)
    ]
    wanted = {h.id for h in handles}
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(vigil.engine.sync_engine, "before_cursor_execute", seen)
    try:
        for _ in range(100):  # Temporal's visibility catches up a moment after the start
            statements.clear()
            found = await vigil._unrecorded(None, since, set())
            if wanted <= {s.id for s in found}:
                break
            await asyncio.sleep(0.2)
        assert wanted <= {s.id for s in found}, found
        assert all(s.status == "unrecorded" for s in found if s.id in wanted)
        reads = [s for s in statements if "FROM sessions" in s]
        assert len(reads) == 1, statements
    finally:
        event.remove(vigil.engine.sync_engine, "before_cursor_execute", seen)
        for handle in handles:
            await handle.terminate("test over")
        await vigil.close()


async def test_a_session_picked_up_late_keeps_the_time_it_was_started(
    settings: Settings, client: Client, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """Its row is written when a worker first runs it, but says when it was started: the
    `list` line of a session does not jump once a worker comes."""
    queue = f"tq-late-{uuid.uuid4().hex[:8]}"
    arg = StartSessionInput(agent_id=f"agent-late-{uuid.uuid4().hex[:8]}", goal="wait")
    handle = await start(client, queue, arg)
    started = (await handle.describe()).start_time
    await asyncio.sleep(2)  # nobody polls the queue yet
    try:
        async with running_worker(client, settings, queue):
            for _ in range(150):
                async with sessionmaker() as db:
                    row = await store.get_session(db, handle.id)
                if row is not None:
                    break
                await asyncio.sleep(0.2)
    finally:
        await handle.terminate("test over")
    assert row is not None
    assert abs(row.created_at - started) < timedelta(milliseconds=5), (row.created_at, started)
