"""Several `vigil worker` processes on one task queue of the real Temporal server: sessions
spread across them, a worker SIGKILLed mid-step leaves its sessions to the others, and a
rolling restart of every worker under 50 running sessions loses nothing.

The model is the local stub, each reply after a short hang, so kills and restarts land
inside model calls. Every record is then checked in PostgreSQL: the session completed,
messages seq 0..N with no gap or duplicate, one model_call event per step.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from tests.cluster.conftest import SpawnWorker
from tests.support.cluster import assert_record_whole, model_calls, stepping, task_identities
from tests.support.llm_stub import LLMStub
from tests.support.sessions import start
from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STEPS = 4
HANG = 0.4


def _input(goal: str, heartbeat_seconds: int = 3) -> StartSessionInput:
    return StartSessionInput(
        agent_id="agent-cluster",
        goal=goal,
        policy=ToolPolicy(require_approval=[]),
        budget=Budget(max_steps=STEPS + 5),
        # A killed worker's model call is noticed by its heartbeat within seconds.
        heartbeat_seconds=heartbeat_seconds,
    )


async def _start_many(
    client: Client, task_queue: str, n: int, heartbeat_seconds: int = 3
) -> list[WorkflowHandle[Any, Any]]:
    return list(
        await asyncio.gather(
            *(
                start(
                    client,
                    task_queue,
                    _input(f"share the work {i}", heartbeat_seconds),
                    f"cluster-{uuid.uuid4()}",
                )
                for i in range(n)
            )
        )
    )


async def _all_complete(handles: list[WorkflowHandle[Any, Any]], within: float) -> None:
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), within)
    assert [r.status for r in results] == [SessionStatus.COMPLETED] * len(handles)
    assert [r.steps for r in results] == [STEPS] * len(handles)


async def test_sessions_spread_and_survive_a_sigkilled_worker(
    client: Client,
    stub: LLMStub,
    workers: tuple[str, SpawnWorker],
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    task_queue, spawn = workers
    last_step_open = threading.Event()
    stub.default = stepping(stub, STEPS, HANG, gate=last_step_open)
    procs = [await spawn() for _ in range(3)]
    handles = await _start_many(client, task_queue, 12)

    # Every session is inside its last model call (held by the stub) when the first worker
    # is killed: the calls it holds are lost with it and must be retried by the others.
    victim = procs[0]
    try:
        await model_calls(stub, len(handles) * STEPS, 120)
        await victim.sigkill()
    finally:
        last_step_open.set()
    await _all_complete(handles, within=240)

    by_session = {h.id: await task_identities(h) for h in handles}
    everyone = {identity for seen in by_session.values() for identity in seen}
    assert {p.identity for p in procs} <= everyone, (everyone, [p.identity for p in procs])
    # Sessions the killed worker had worked on were finished by the others.
    orphaned = [seen for seen in by_session.values() if victim.identity in seen]
    assert orphaned
    assert all(seen[-1] != victim.identity for seen in orphaned)
    for h in handles:
        await assert_record_whole(sessionmaker, h.id, STEPS)


async def test_rolling_restart_of_every_worker_under_50_sessions(
    client: Client,
    stub: LLMStub,
    workers: tuple[str, SpawnWorker],
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    task_queue, spawn = workers
    # No session can finish before the restart is over: their last step waits for it.
    restart_over = threading.Event()
    stub.default = stepping(stub, STEPS, HANG, gate=restart_over)
    procs = [await spawn() for _ in range(3)]
    # Stopped workers (SIGTERM) cut off the calls still running when their grace period
    # ends: no need for a short heartbeat, and 50 sessions on a busy machine must not be
    # taken for lost ones.
    handles = await _start_many(client, task_queue, 50, heartbeat_seconds=15)

    await model_calls(stub, 50, 90)  # every session under way
    restarted = []
    try:
        for old in procs:  # one at a time: stop it (SIGTERM), start its replacement
            code = await old.stop()
            assert code == 0, old.log()[-3000:]
            restarted.append(await spawn())
    finally:
        restart_over.set()
    await _all_complete(handles, within=300)

    for h in handles:
        await assert_record_whole(sessionmaker, h.id, STEPS)
    late = {identity for h in handles for identity in await task_identities(h)}
    assert any(p.identity in late for p in restarted), "the new workers took no work"
