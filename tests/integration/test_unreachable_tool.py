"""A tool that no worker serves never leaves a session waiting: a queue without pollers
(found by the probe before the first call) and a worker that does not load the tool both
become the call's tool error, recorded and read by the model, which goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.agent_tools import apply_agent, worker_settings
from tests.support.llm_stub import LLMStub, Reply
from tests.support.queued_tools import NOBODY_QUEUE
from tests.support.sessions import events, running_worker, session_input, start, transcript
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_queue_nobody_serves_is_a_tool_error(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, ["render_frames"], modules=["tests.support.queued_tools"]
    )
    stub.enqueue(
        Reply.tool_call("render_frames", {"count": 2}),
        Reply.tool_call("finish", {"summary": "no GPU today"}),
    )
    async with running_worker(client, worker_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("render", agent_id=agent.name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED and result.summary == "no GPU today"
    said = (
        f"error: tool 'render_frames' runs on task queue {NOBODY_QUEUE!r}, but no worker "
        f"serves that queue; start one with: vigil worker --tools MODULE --task-queue "
        f"{NOBODY_QUEUE} --tools-only"
    )
    tool_messages = [
        m.content for m in await transcript(sessionmaker, handle.id) if m.role == "tool"
    ]
    assert tool_messages[0] == said
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert call.payload["ok"] is False
    assert said in str(stub.requests[1].body["messages"])  # the model read it


async def test_a_tool_the_worker_does_not_load_is_a_tool_error(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, ["whoami"], modules=["tests.support.py_tools"]
    )
    stub.enqueue(
        Reply.tool_call("whoami", {}), Reply.tool_call("finish", {"summary": "went without"})
    )
    # The agent names a tool of tests.support.py_tools; this worker was started without it.
    async with running_worker(client, worker_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("who", agent_id=agent.name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    tool_messages = [
        m.content for m in await transcript(sessionmaker, handle.id) if m.role == "tool"
    ]
    assert tool_messages[0].startswith(
        "error: tool 'whoami' is not loaded on this worker (task queue "
    )
    assert "Start a worker with --tools MODULE that provides it" in tool_messages[0]
