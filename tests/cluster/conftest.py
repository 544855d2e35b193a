"""Fixtures for the cluster-profile tests: the real Temporal server on PostgreSQL (its own
state folder and ports), `vigil worker` processes started per test.

The root conftest's fixtures (``database_url``, ``engine``, ``sessionmaker``, ``client``)
follow the ``stack`` and ``settings`` overridden here, so the same names serve both
profiles.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import READY_LINE, WorkerProc, cluster_settings, worker_env
from tests.support.llm_stub import LLMStub
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

SpawnWorker = Callable[..., Awaitable[WorkerProc]]


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    the_stack = Stack(cluster_settings())
    was_running = all(part.running for part in the_stack.status())
    the_stack.up()
    yield the_stack
    if not was_running and not os.environ.get("VIGIL_TEST_KEEP_STACK"):
        the_stack.down()


@pytest.fixture(scope="session")
def settings(stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return cluster_settings(database_url, artifact_dir=tmp_path_factory.mktemp("artifacts"))


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub() as s:
        yield s


@pytest.fixture
async def workers(
    settings: Settings, stub: LLMStub, tmp_path: Path
) -> AsyncIterator[tuple[str, SpawnWorker]]:
    """(task queue, spawn): ``await spawn(**env)`` starts one more `vigil worker` on the
    queue and returns once it polls; every one still running is stopped at the end."""
    task_queue = f"tq-cluster-{uuid.uuid4()}"
    spawned: list[WorkerProc] = []

    async def spawn(
        argv: list[str] | None = None, ready_line: str = READY_LINE, **extra: str
    ) -> WorkerProc:
        env = worker_env(settings, task_queue=task_queue, model_url=stub.url_openai, **extra)
        log = tmp_path / f"worker-{len(spawned)}.log"
        worker = WorkerProc(env, log) if argv is None else WorkerProc(env, log, argv)
        spawned.append(worker)
        return await worker.start(ready_line)

    yield task_queue, spawn
    for worker in spawned:
        if worker.proc is not None:
            await worker.stop()
