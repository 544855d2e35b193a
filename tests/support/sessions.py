"""Helpers to run AgentSessions against the real test stack with a stubbed LLM."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from temporalio.client import Client, WorkflowHandle

from activities.models.base import ModelProvider
from schema import names
from schema.payloads import SessionState, StartSessionInput
from workers.settings import Settings
from workers.worker import build_worker, runtime
from workflows.session import AgentSession


def stub_settings(settings: Settings, base_url: str, provider: str = "openai", **extra: Any) -> Settings:
    return settings.model_copy(
        update={"model_provider": provider, "model_base_url": base_url, "model_name": "stub-model",
                "model_timeout_seconds": 5.0, **extra}
    )


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, task_queue: str, provider: ModelProvider | None = None
) -> AsyncIterator[None]:
    async with runtime(settings, provider) as rt:
        async with build_worker(client, rt, task_queue):
            yield


async def start(
    client: Client, task_queue: str, arg: StartSessionInput, session_id: str | None = None
) -> WorkflowHandle[AgentSession, Any]:
    return await client.start_workflow(
        AgentSession.run, arg, id=session_id or f"test-session-{uuid.uuid4()}",
        task_queue=task_queue,
    )


async def state(handle: WorkflowHandle[Any, Any]) -> SessionState:
    return await handle.query(names.QUERY_STATE, result_type=SessionState)


async def eventually(
    handle: WorkflowHandle[Any, Any], check: Callable[[SessionState], bool], timeout: float = 30
) -> SessionState:
    """Poll the state query until ``check`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await state(handle)
        if check(current):
            return current
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last state: {current}")
        await asyncio.sleep(0.1)
