"""A session whose Python tool only a ``vigil worker --tools ... --tools-only`` process
serves, on the tool's own task queue: the session's worker probes that queue, sends the
call there, and the tool worker runs it and records the result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.agent_tools import apply_agent, worker_settings
from tests.support.cli import WorkerProcess, cli_env
from tests.support.llm_stub import LLMStub, Reply
from tests.support.queued_tools import TOOLS_QUEUE
from tests.support.sessions import events, running_worker, session_input, start
from vigil.schema import names
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tool_worker(
    stack: Stack, database_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("tool-worker")
    env = cli_env(
        database_url=database_url,
        state_dir=stack.settings.resolved_state_dir,
        task_queue="unused-by-a-tool-worker",
        model_url="http://127.0.0.1:9/v1",  # a tool worker never calls a model
        artifact_dir=settings.artifact_dir,
    )
    args = ["--tools", "tests.support.queued_tools", "--task-queue", TOOLS_QUEUE, "--tools-only"]
    worker = WorkerProcess(env, tmp / "worker.log", args).start()
    try:
        yield worker
    finally:
        code = worker.stop()
    log = worker.log()
    assert code == 0 and "Traceback" not in log, log[-3000:]


async def test_the_tool_runs_on_the_tool_worker(
    tool_worker: WorkerProcess,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, ["worker_pid"], modules=["tests.support.queued_tools"]
    )
    stub.enqueue(Reply.tool_call("worker_pid", {}), Reply.tool_call("finish", {"summary": "asked"}))
    cfg = worker_settings(settings, stub.url_openai)  # loads no Python tools itself
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("where", agent_id=agent.name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert tool_worker.proc is not None
    (ran,) = await events(sessionmaker, handle.id, "tool_call")
    assert ran.payload["ok"] is True
    assert ran.payload["data"] == {"pid": tool_worker.proc.pid}  # not this process

    history = await handle.fetch_history()
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_type.name: (
            e.activity_task_scheduled_event_attributes.task_queue.name
        )
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert scheduled[names.ACT_PROBE_TOOL_QUEUE] == task_queue  # asked before the call
    run_tools = [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == names.ACT_RUN_TOOL
    ]
    # worker_pid there; finish is checked inside the model activity (a folded step)
    assert run_tools == [TOOLS_QUEUE]
