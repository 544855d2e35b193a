"""Worker versioning: two builds of the workflow code side by side on one task queue.

Build b1 is `vigil worker` as released; build b2 is a worker running a deliberately
incompatible change of the session workflow (tests/support/session_v2.py: a timer before the
first step). Sessions are pinned: those started on b1 finish on b1 even after b2 became the
current version, and never hit b2's code; sessions started after the switch run on b2. The
incompatibility is real: replaying an old session's history with b2's workflow fails.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Replayer

from tests.cluster.conftest import SpawnWorker
from tests.support.cluster import model_calls, stepping
from tests.support.llm_stub import LLMStub
from tests.support.session_v2 import WORKFLOWS as CHANGED_WORKFLOWS
from tests.support.sessions import start
from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.deployments import describe, set_current_version
from vigil.workers.temporal import workflow_runner

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

STEPS = 3


def _input(goal: str) -> StartSessionInput:
    return StartSessionInput(
        agent_id="agent-deploy",
        goal=goal,
        policy=ToolPolicy(require_approval=[]),
        budget=Budget(max_steps=STEPS + 5),
    )


async def _make_current(client: Client, deployment: str, build_id: str) -> None:
    """Set the current version once the build's workers have registered it."""
    async with asyncio.timeout(60):
        while True:
            try:
                await set_current_version(client, deployment, build_id)
                break
            except Exception:  # the version is not known until its workers poll
                await asyncio.sleep(0.5)
    current, _ = await describe(client, deployment)
    assert current == build_id


async def _builds_and_timers(handle: WorkflowHandle[Any, Any]) -> tuple[set[str], int, int]:
    """(build ids that completed its workflow tasks, timers started, workflow task failures)."""
    history = await handle.fetch_history()
    builds: set[str] = set()
    timers = failures = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            a = event.workflow_task_completed_event_attributes
            builds.add(
                a.deployment_version.build_id
                or a.worker_deployment_version.rpartition(".")[2]
                or a.worker_version.build_id
            )
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            timers += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failures += 1
    return builds, timers, failures


async def test_old_sessions_finish_on_their_build_while_new_ones_run_the_new_one(
    client: Client, stub: LLMStub, workers: tuple[str, SpawnWorker]
) -> None:
    task_queue, spawn = workers
    deployment = f"vigil-test-{uuid.uuid4().hex[:8]}"
    hold_old = threading.Event()
    stub.default = stepping(stub, STEPS, 0.1, gate=hold_old)

    await spawn(VIGIL_DEPLOYMENT_NAME=deployment, VIGIL_BUILD_ID="b1")
    await _make_current(client, deployment, "b1")
    old = [
        await start(client, task_queue, _input(f"started on b1 {i}"), f"deploy-old-{uuid.uuid4()}")
        for i in range(3)
    ]
    try:
        await model_calls(stub, len(old) * STEPS, 90)

        # The new build rolls out beside the old one and becomes current.
        await spawn(
            [
                sys.executable,
                "-m",
                "tests.support.worker_proc",
                "--workflows",
                "tests.support.session_v2:WORKFLOWS",
            ],
            ready_line="READY",
            VIGIL_DEPLOYMENT_NAME=deployment,
            VIGIL_BUILD_ID="b2",
        )
        await _make_current(client, deployment, "b2")
        new = [
            await start(
                client, task_queue, _input(f"started on b2 {i}"), f"deploy-new-{uuid.uuid4()}"
            )
            for i in range(2)
        ]
        await model_calls(stub, (len(old) + len(new)) * STEPS, 90)
    finally:
        hold_old.set()

    for handle in [*old, *new]:
        result = await asyncio.wait_for(handle.result(), 120)
        assert (result.status, result.steps) == (SessionStatus.COMPLETED, STEPS)
    for handle in old:
        builds, timers, failures = await _builds_and_timers(handle)
        assert (builds, timers, failures) == ({"b1"}, 0, 0), handle.id
        info = (await handle.describe()).raw_description.workflow_execution_info
        assert info.versioning_info.behavior == VersioningBehavior.VERSIONING_BEHAVIOR_PINNED
    for handle in new:
        builds, timers, failures = await _builds_and_timers(handle)
        assert (builds, timers, failures) == ({"b2"}, 1, 0), handle.id

    # b2 could not have run the old sessions: their histories do not replay on its code.
    replayer = Replayer(
        workflows=CHANGED_WORKFLOWS,
        data_converter=client.data_converter,
        workflow_runner=workflow_runner(sandboxed=True),
    )
    history = await old[0].fetch_history()
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is not None
    assert "nondetermin" in str(replayed.replay_failure).lower()
