"""The cluster-profile test stack and its workers: the real Temporal server on PostgreSQL,
several `vigil worker` processes on one task queue, and checks that every record is whole.

The cluster stack has a state folder and ports of its own (the embedded test stack's plus
50), so the cluster tests run beside the embedded ones. ``python -m tests.support.cluster``
builds what is missing and starts it (scripts/test.sh does, outside pytest's timeouts).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from tests.support.llm_stub import LLMStub, Reply
from tests.support.teststack import ROOT, TEST_PORTS
from vigil.workers.liveness import split_identity
from vigil.workers.settings import Settings

CLUSTER_PORTS = {name: port + 50 for name, port in TEST_PORTS.items()}
READY_LINE = "worker polling"
VIGIL = [sys.executable, "-m", "vigil.workers.cli"]


def cluster_state_dir() -> Path:
    base = os.environ.get("VIGIL_TEST_STATE_DIR", str(ROOT / ".vigil-test"))
    return Path(base + "-cluster")


def cluster_settings(database_url: str | None = None, **extra: object) -> Settings:
    """The cluster test stack: no MinIO (artifacts on the filesystem), no API daemon."""
    return Settings(  # type: ignore[arg-type]
        state_dir=cluster_state_dir(),
        stack_profile="cluster",
        api_in_stack=False,
        database_url=database_url,
        **{**CLUSTER_PORTS, **extra},
    )


def worker_env(
    settings: Settings, *, task_queue: str, model_url: str, **extra: str
) -> dict[str, str]:
    """The environment of a `vigil worker` on the cluster (a user's shell)."""
    endpoints = settings.endpoints()
    assert endpoints.database_url is not None
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIGIL_") and k not in ("TEMPORAL_ADDRESS", "DATABASE_URL")
    }
    env.update(
        {
            "TEMPORAL_ADDRESS": endpoints.temporal_address,
            "DATABASE_URL": endpoints.database_url,
            "VIGIL_STATE_DIR": str(settings.resolved_state_dir),
            "VIGIL_TASK_QUEUE": task_queue,
            "VIGIL_MODEL_PROVIDER": "openai",
            "VIGIL_MODEL_BASE_URL": model_url,
            "VIGIL_MODEL_NAME": "stub-model",
            "VIGIL_MODEL_TIMEOUT_SECONDS": "60",
            "VIGIL_HTTP_ALLOW": model_url.split("//", 1)[1].split("/", 1)[0],
            "VIGIL_ARTIFACT_BACKEND": "fs",
            "VIGIL_ARTIFACT_DIR": str(endpoints.artifact_dir),
            "VIGIL_ALLOW_UNDEFINED_AGENTS": "1",
            "VIGIL_RECONCILE_SECONDS": "0",
            "VIGIL_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@dataclass
class WorkerProc:
    """One `vigil worker` OS process (or ``argv`` instead of it), output in its own log."""

    env: dict[str, str]
    log_path: Path
    argv: list[str] = field(
        default_factory=lambda: [sys.executable, "-m", "vigil.workers.cli", "worker"]
    )
    proc: asyncio.subprocess.Process | None = None

    @property
    def identity(self) -> str:
        """The Temporal identity the SDK gives this worker (``pid@host``)."""
        assert self.proc is not None
        return f"{self.proc.pid}@{os.uname().nodename}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, ready_line: str = READY_LINE, within: float = 180) -> WorkerProc:
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=out,
                stdin=asyncio.subprocess.DEVNULL,
            )
        deadline = asyncio.get_running_loop().time() + within
        while ready_line not in self.log():
            if self.proc.returncode is not None:
                raise AssertionError(f"the worker exited early:\n{self.log()[-3000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the worker did not poll in {within}s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.1)
        return self

    async def sigkill(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self, within: float = 30) -> int:
        """SIGTERM and wait (SIGKILL after ``within``); the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode if self.proc.returncode is not None else -1


def stepping(stub: LLMStub, steps: int, hang: float, gate: threading.Event | None = None) -> Any:
    """A responder: each model call takes ``hang`` seconds; steps 1..steps-1 fetch a page
    from the stub (a tool call), the last one finishes, once ``gate`` is open when given (so
    every session is still running until the test opens it). Retries get the same answer."""

    def answer(body: Any) -> Reply:
        step = 1 + sum(1 for m in body["messages"] if m["role"] == "assistant")
        if step >= steps:
            if gate is not None:
                gate.wait(120)
            reply = Reply.tool_call("finish", {"summary": "all steps done"})
        else:
            reply = Reply.tool_call("http_fetch", {"url": f"{stub.url}/step/{step}"})
        return Reply.hang(hang, then=reply)

    return answer


async def model_calls(stub: LLMStub, n: int, within: float = 120) -> None:
    """Until the stub has received ``n`` model requests."""
    async with asyncio.timeout(within):
        while True:  # the stub answers in its own threads: poll
            if len(stub.requests) >= n:
                return
            await asyncio.sleep(0.1)


async def assert_record_whole(
    sessionmaker: async_sessionmaker[DbSession], session_id: str, steps: int
) -> None:
    """The session completed with ``steps`` steps; messages seq 0..N with no gap and no
    duplicate; one model_call event per step; every tool call answered exactly once."""
    from tests.support.sessions import assert_whole, transcript

    async with sessionmaker() as db:

        async def rows(sql: str) -> list[Any]:
            return list((await db.execute(text(sql), {"s": session_id})).all())

        status, step = (await rows("SELECT status, step FROM sessions WHERE id = :s"))[0]
        assert (status, step) == ("completed", steps), (session_id, status, step)
        count, distinct, low, high = (
            await rows(
                "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM messages "
                "WHERE session_id = :s"
            )
        )[0]
        assert low == 0 and count == distinct == high + 1, (session_id, count, distinct, high)
        model_events = await rows(
            "SELECT key, count(*) FROM events WHERE session_id = :s AND kind = 'model_call' "
            "GROUP BY key ORDER BY min(step)"
        )
        assert model_events == [(f"model:{n}", 1) for n in range(1, steps + 1)], model_events
        results = await rows(
            "SELECT tool_call_id, count(*) FROM messages WHERE session_id = :s AND role = 'tool' "
            "GROUP BY tool_call_id HAVING count(*) > 1"
        )
        assert not results, f"tool results recorded twice: {results}"
    assert_whole(await transcript(sessionmaker, session_id))


async def task_identities(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The worker (``pid@host``) of every completed workflow task and started activity, in
    order."""
    history = await handle.fetch_history()
    seen: list[str] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            seen.append(split_identity(event.workflow_task_completed_event_attributes.identity)[0])
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            seen.append(split_identity(event.activity_task_started_event_attributes.identity)[0])
    return seen


if __name__ == "__main__":
    # Build what is missing and start the cluster test stack, outside pytest's timeouts.
    from vigil.workers.stack import Stack

    def say(message: str) -> None:
        print(f"· cluster: {message}", flush=True)

    Stack(cluster_settings(), say=say).up()
