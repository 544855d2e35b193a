"""Fixtures for tests that drive vigil as a user does: a real `vigil worker` process and
`vigil ...` subprocesses, against the test stack and a stubbed LLM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from tests.support.cli import SessionScripts, Vigil, WorkerProcess, cli_env
from tests.support.llm_stub import LLMStub, Reply
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack


@dataclass
class CLIStack:
    """One module's worker process, its task queue and model stub, and the CLI's env."""

    stub: LLMStub
    scripts: SessionScripts
    vigil: Vigil
    worker: WorkerProcess
    settings: Settings
    """The same configuration as the processes', for in-process clients and checks."""
    database_url: str

    def plan(self, *replies: Reply, label: str = "goal") -> str:
        """A goal whose session the stub answers with ``replies``, one per step."""
        return self.scripts.plan(*replies, label=label)


@pytest.fixture(scope="module")
def cli(
    stack: Stack, database_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CLIStack]:
    """A `vigil worker` subprocess on a fresh task queue, stopped with SIGTERM at the end."""
    task_queue = f"tq-cli-{uuid.uuid4()}"
    tmp = tmp_path_factory.mktemp("cli")
    artifacts = tmp / "artifacts"
    scripts = SessionScripts()
    with LLMStub() as stub:
        stub.default = scripts
        env = cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=task_queue,
            model_url=stub.url_openai,
            artifact_dir=artifacts,
        )
        worker = WorkerProcess(env, tmp / "worker.log").start()
        local = settings.model_copy(
            update={
                "task_queue": task_queue,
                "artifact_dir": artifacts,
                "artifact_backend": "fs",
                "allow_undefined_agents": True,  # as the processes' env
            }
        )
        try:
            yield CLIStack(
                stub=stub,
                scripts=scripts,
                vigil=Vigil(env),
                worker=worker,
                settings=local,
                database_url=database_url,
            )
        finally:
            code = worker.stop()
        log = worker.log()
        assert code == 0, f"the worker exited {code} on SIGTERM:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]
        assert "worker stopped" in log, log[-3000:]
        assert not stub.errors, stub.errors


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    """A local LLM server speaking the OpenAI and Anthropic protocols, one per test."""
    with LLMStub() as s:
        yield s


@pytest.fixture
async def vigil_client(settings: Settings) -> AsyncIterator[VigilClient]:
    """vigil's own client on the test stack, as the CLI and the API make it."""
    client = await VigilClient.connect(settings)
    try:
        yield client
    finally:
        await client.close()
