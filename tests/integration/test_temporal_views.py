"""Temporal's view of sessions, asked for by controls and lists.

A control sent while no worker is listed as polling the session's queue asks again for a
moment before it is refused: a Temporal server restarted a moment before lists no poller
until its workers poll again, and an approval sent then was refused ("no worker is
polling ...: start one") while the worker was reconnecting. A list of sessions asks
Temporal about every row it shows."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, session_input, start, stub_settings
from vigil.activities.record.store import create_session
from vigil.schema.payloads import SessionStatus
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_worker_that_polls_again_within_a_moment_takes_the_control(
    client: Client, settings: Settings, task_queue: str, stub: LLMStub
) -> None:
    stub.enqueue(Reply.hang(3.0, then=Reply.text("done")))
    handle = await start(client, task_queue, session_input("wait for me"))
    cfg = stub_settings(settings, stub.url_openai)
    vigil = await VigilClient.connect(cfg)
    try:
        pause = asyncio.create_task(vigil.pause(handle.id, by="ana", reason="a look"))
        await asyncio.sleep(1.0)  # no worker polls the queue yet
        assert not pause.done()
        async with running_worker(client, cfg, task_queue):
            ack = await pause
            assert ack is not None and ack.accepted, ack
            await vigil.resume(handle.id, by="ana")
            result = await handle.result()
    finally:
        await vigil.close()
    assert result.status == SessionStatus.COMPLETED, result


async def test_a_list_of_over_200_sessions_tells_each_ones_temporal_status(
    client: Client, settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """`vigil list --limit 400` asked Temporal about the first 200 rows only: the rest
    showed no Temporal status, as if Temporal did not know them."""
    agent, queue = f"many-{uuid.uuid4().hex[:8]}", f"nobody-{uuid.uuid4().hex}"
    ids = [f"{agent}-{n:03d}" for n in range(205)]
    async with sessionmaker.begin() as db:
        for sid in ids:
            await create_session(db, session_id=sid, agent_id=agent, goal="g", status="running")
    handles = [
        await client.start_workflow("vigil-test-placeholder", id=sid, task_queue=queue)
        for sid in ids
    ]
    vigil = await VigilClient.connect(settings)
    try:
        page = await vigil.session_page(agent=agent, limit=300)
        assert len(page.items) == len(ids)
        assert {s.temporal_status for s in page.items} == {"running"}
    finally:
        await vigil.close()
        for handle in handles:
            await handle.terminate("done")
