"""The worker_* settings reach the Temporal worker, and a worker without a workflow cache
(every task replays the history) still runs workflows to the same result."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum

from tests.support.greeter import Greeted, Greeter, Greeting, greet
from vigil.workers.settings import Settings
from vigil.workers.temporal import new_worker

pytestmark = pytest.mark.integration


async def test_worker_options_come_from_settings(client: Client, task_queue: str) -> None:
    settings = Settings(  # type: ignore[call-arg]
        worker_max_cached_workflows=0,
        worker_max_concurrent_workflow_tasks=3,
        worker_max_concurrent_activities=4,
        worker_workflow_pollers=2,
        worker_activity_pollers=3,
    )
    worker = new_worker(
        client, task_queue=task_queue, workflows=[Greeter], activities=[greet], settings=settings
    )
    config = worker.config()
    assert config.get("max_cached_workflows") == 0
    assert config.get("max_concurrent_workflow_tasks") == 3
    assert config.get("max_concurrent_activities") == 4
    assert config.get("workflow_task_poller_behavior") == PollerBehaviorSimpleMaximum(2)
    assert config.get("activity_task_poller_behavior") == PollerBehaviorSimpleMaximum(3)
    async with worker:
        result = await client.execute_workflow(
            Greeter.run,
            Greeting(name="uncached"),
            id=f"greet-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=Greeted,
        )
    assert result == Greeted(text="hello uncached", attempt=1)


def test_worker_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_WORKER_MAX_CACHED_WORKFLOWS", "250")
    monkeypatch.setenv("VIGIL_WORKER_WORKFLOW_POLLERS", "8")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.worker_max_cached_workflows == 250
    assert settings.worker_workflow_pollers == 8
    assert settings.worker_activity_pollers is None  # the SDK's default
    monkeypatch.setenv("VIGIL_WORKER_MAX_CACHED_WORKFLOWS", "-1")
    with pytest.raises(ValueError, match="worker_max_cached_workflows"):
        Settings()  # type: ignore[call-arg]
