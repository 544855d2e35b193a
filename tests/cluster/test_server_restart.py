"""The real Temporal server stopped and started again while sessions run: every session
resumes and finishes, with its record whole."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.cluster.conftest import SpawnWorker
from tests.support.cluster import assert_record_whole, model_calls, stepping
from tests.support.llm_stub import LLMStub
from tests.support.sessions import start
from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STEPS = 4
SESSIONS = 6


def _quiet(_: str) -> None:
    return None


async def test_sessions_resume_after_the_server_restarts(
    stack: Stack,
    client: Client,
    stub: LLMStub,
    workers: tuple[str, SpawnWorker],
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    task_queue, spawn = workers
    server_back = threading.Event()
    stub.default = stepping(stub, STEPS, 0.3, gate=server_back)
    await spawn()
    await spawn()
    handles = [
        await start(
            client,
            task_queue,
            StartSessionInput(
                agent_id="agent-cluster",
                goal=f"outlive the server {i}",
                policy=ToolPolicy(require_approval=[]),
                budget=Budget(max_steps=STEPS + 5),
                heartbeat_seconds=2,
            ),
            f"cluster-restart-{uuid.uuid4()}",
        )
        for i in range(SESSIONS)
    ]
    try:
        await model_calls(stub, SESSIONS * STEPS, 120)  # every session is in its last model call
        pid_before = stack.cluster.pid()
        await asyncio.to_thread(stack.cluster.stop, ui=False)
        assert not stack.cluster.running()
        await asyncio.to_thread(stack.cluster.start, _quiet)
        await asyncio.to_thread(stack.cluster.wait, _quiet)
        assert stack.cluster.pid() != pid_before
    finally:
        server_back.set()

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 240)
    assert [r.status for r in results] == [SessionStatus.COMPLETED] * SESSIONS
    for h in handles:
        await assert_record_whole(sessionmaker, h.id, STEPS)
