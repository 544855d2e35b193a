"""A tool served only by a second worker process on its own task queue
(``vigil worker --tools ... --task-queue ... --tools-only``), and calls that no worker
would ever pick up: they fail at once with a clear error instead of waiting forever."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support import py_tools
from tests.support.cli import Vigil, WorkerProcess, cli_env, one_error_line
from tests.support.tool_calls import ToolCaller, model_asked, recorded, tool_caller
from vigil.schema import names
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

TOOLS_QUEUE = f"tq-tools-gpu-{uuid.uuid4()}"


@pytest.fixture(scope="module")
def tool_worker(
    stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    tmp = tmp_path_factory.mktemp("tool-worker")
    env = cli_env(
        database_url=database_url,
        state_dir=stack.settings.resolved_state_dir,
        task_queue="unused-by-a-tool-worker",
        model_url="http://127.0.0.1:9/v1",
        artifact_dir=tmp / "artifacts",
    )
    args = ["--tools", "tests.support.py_tools", "--task-queue", TOOLS_QUEUE, "--tools-only"]
    worker = WorkerProcess(env, tmp / "worker.log", args).start()
    try:
        yield worker
    finally:
        code = worker.stop()
    log = worker.log()
    assert code == 0 and "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
async def caller(client: Client, settings: Settings) -> AsyncIterator[ToolCaller]:
    """The session's worker: it loads no Python tools of its own."""
    async with tool_caller(client, settings, f"tq-session-{uuid.uuid4()}") as c:
        yield c


async def test_the_tool_runs_on_the_tool_worker(
    tool_worker: WorkerProcess,
    caller: ToolCaller,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    assert "whoami" not in caller.rt.tools.python
    entry = py_tools.whoami.describe().model_copy(update={"task_queue": TOOLS_QUEUE})
    call = await model_asked(sessionmaker, "whoami", {}, tool=entry)
    out = await caller.call(call)
    assert tool_worker.proc is not None
    assert (out.ok, out.preview) == (True, f'{{"pid": {tool_worker.proc.pid}}}')
    message, _ = await recorded(sessionmaker, call)  # the tool worker recorded the result
    assert message is not None and message.content == out.preview


async def test_bad_arguments_are_answered_by_the_tool_worker(
    tool_worker: WorkerProcess, caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    entry = py_tools.word_count.describe().model_copy(update={"task_queue": TOOLS_QUEUE})
    out = await caller.call(await model_asked(sessionmaker, "word_count", {}, tool=entry))
    assert not out.ok and out.preview.startswith("error: invalid arguments for word_count")


async def test_a_tool_the_tool_worker_does_not_load(
    tool_worker: WorkerProcess, caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    entry = py_tools.whoami.describe().model_copy(
        update={"name": "render_frames", "task_queue": TOOLS_QUEUE}
    )
    out = await caller.call(await model_asked(sessionmaker, "render_frames", {}, tool=entry))
    assert out.error_type == names.ERR_TOOL_NOT_LOADED
    assert out.error is not None and f"(task queue {TOOLS_QUEUE})" in out.error


async def test_a_queue_no_worker_serves_is_caught_before_the_call(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    nobody = f"tq-nobody-{uuid.uuid4()}"
    entry = py_tools.whoami.describe().model_copy(update={"task_queue": nobody})
    call = await model_asked(sessionmaker, "whoami", {}, tool=entry)
    out = await caller.call(call)
    assert out.error_type == names.ERR_TOOL_UNREACHABLE
    assert out.error == (
        f"tool 'whoami' runs on task queue {nobody!r}, but no worker serves that queue; "
        f"start one with: vigil worker --tools MODULE --task-queue {nobody} --tools-only"
    )


async def test_without_the_probe_schedule_to_start_ends_the_wait(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    entry = py_tools.whoami.describe().model_copy(
        update={"task_queue": f"tq-nobody-{uuid.uuid4()}"}
    )
    call = await model_asked(sessionmaker, "whoami", {}, tool=entry)
    out = await caller.call(call, probe=False, schedule_to_start=2)
    assert out.error_type == "timeout:SCHEDULE_TO_START"


def test_a_tools_only_worker_needs_tools(stack: Stack, database_url: str, tmp_path: Path) -> None:
    env = cli_env(
        database_url=database_url,
        state_dir=stack.settings.resolved_state_dir,
        task_queue=TOOLS_QUEUE,
        model_url="http://127.0.0.1:9/v1",
        artifact_dir=tmp_path,
    )
    done = Vigil(env)("worker", "--tools-only")
    assert done.returncode == 2
    assert one_error_line(done) == (
        "error: worker could not start: a tools-only worker needs tools: pass --tools MODULE"
    )
