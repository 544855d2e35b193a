"""The worker_* settings reach the Temporal worker, and a worker without a workflow cache
(every task replays the history) still runs workflows to the same result. Sessions run
without Temporal's workflow sandbox unless ``worker_workflow_sandbox`` asks for it, and
run alike either way. Workflow tasks run on the worker's event loop unless
``worker_inline_workflow_tasks`` is off (then on the SDK's threads), and sessions run
alike either way too."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from tests.support.greeter import Greeted, Greeter, Greeting, greet
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, session_input, start, stub_settings, transcript
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings
from vigil.workers.temporal import new_worker

pytestmark = pytest.mark.integration


@workflow.defn(name="test.WhereRun", sandboxed=False)
class WhereRun:
    """Answers the thread its task ran on (a test probe, never replayed)."""

    @workflow.run
    async def run(self) -> int:
        return threading.get_ident()


async def test_worker_options_come_from_settings(
    client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIGIL_WORKER_WORKFLOW_SANDBOX", raising=False)
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
    assert isinstance(config.get("workflow_runner"), UnsandboxedWorkflowRunner)
    assert config.get("debug_mode") is True  # inline workflow tasks, the default
    async with worker:
        result = await client.execute_workflow(
            Greeter.run,
            Greeting(name="uncached"),
            id=f"greet-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=Greeted,
        )
    assert result == Greeted(text="hello uncached", attempt=1)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "threaded"])
async def test_workflow_tasks_run_where_the_setting_says(
    client: Client, task_queue: str, inline: bool
) -> None:
    settings = Settings(worker_inline_workflow_tasks=inline)  # type: ignore[call-arg]
    worker = new_worker(
        client, task_queue=task_queue, workflows=[WhereRun], activities=[], settings=settings
    )
    assert worker.config().get("debug_mode") is inline
    async with worker:
        ran_on = await client.execute_workflow(
            WhereRun.run, id=f"where-{uuid.uuid4()}", task_queue=task_queue, result_type=int
        )
    assert (ran_on == threading.get_ident()) is inline


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "threaded"])
@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandbox", "no-sandbox"])
async def test_a_session_runs_alike_with_and_without_the_sandbox(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    sandboxed: bool,
    inline: bool,
) -> None:
    stub.enqueue(
        Reply.tool_call("read_artifact", {"name": "none"}),
        Reply.tool_call("finish", {"summary": "looked"}),
    )
    cfg = stub_settings(
        settings,
        stub.url_openai,
        worker_workflow_sandbox=sandboxed,
        worker_inline_workflow_tasks=inline,
    )
    probe = new_worker(
        client, task_queue=f"{task_queue}-probe", workflows=[Greeter], activities=[], settings=cfg
    )
    runner = SandboxedWorkflowRunner if sandboxed else UnsandboxedWorkflowRunner
    assert isinstance(probe.config().get("workflow_runner"), runner)
    # The sandbox keeps the SDK's threads whatever the setting says.
    assert probe.config().get("debug_mode") is (inline and not sandboxed)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("look once"))
        result = await handle.result()
    assert (result.status, result.steps, result.summary) == (SessionStatus.COMPLETED, 2, "looked")
    messages = await transcript(sessionmaker, handle.id)
    roles = ["user", "assistant", "tool", "assistant", "tool", "system"]
    assert [m.role for m in messages] == roles
    assert [m.seq for m in messages] == list(range(len(messages)))


def test_worker_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_WORKER_WORKFLOW_SANDBOX", raising=False)
    assert Settings().worker_workflow_sandbox is False  # type: ignore[call-arg]
    monkeypatch.setenv("VIGIL_WORKER_WORKFLOW_SANDBOX", "true")
    assert Settings().worker_workflow_sandbox is True  # type: ignore[call-arg]
    assert Settings().worker_inline_workflow_tasks is True  # type: ignore[call-arg]
    monkeypatch.setenv("VIGIL_WORKER_INLINE_WORKFLOW_TASKS", "false")
    assert Settings().worker_inline_workflow_tasks is False  # type: ignore[call-arg]
    monkeypatch.setenv("VIGIL_WORKER_MAX_CACHED_WORKFLOWS", "250")
    monkeypatch.setenv("VIGIL_WORKER_WORKFLOW_POLLERS", "8")
    settings = Settings()  # type: ignore[call-arg]
    assert settings.worker_max_cached_workflows == 250
    assert settings.worker_workflow_pollers == 8
    assert settings.worker_activity_pollers is None  # the SDK's default
    monkeypatch.setenv("VIGIL_WORKER_MAX_CACHED_WORKFLOWS", "-1")
    with pytest.raises(ValueError, match="worker_max_cached_workflows"):
        Settings()  # type: ignore[call-arg]
