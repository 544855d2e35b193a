"""A tool call whose activity fails for good (its time limit passed on every attempt, or
its failure budget is spent) is the model's tool error, and the session goes on.

Before, the failure ended the session (failed) and its transcript said the call was
"not run: the session ended (failed) first", though it had run and failed: an agent
whose built-in tool was given a short ``timeout_seconds`` lost its whole session to one
slow page. A Python or MCP tool's own time limit was already the model's error.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.agent_tools import apply_agent
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    events,
    running_worker,
    session_input,
    start,
    stub_settings,
    tool_messages,
    transcript,
)
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_tool_that_times_out_on_every_attempt_is_the_models_error(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    quick = {"name": "http_fetch", "timeout_seconds": 1, "max_attempts": 2, "approval": "never"}
    agent = await apply_agent(settings, sessionmaker, tmp_path, [quick])
    stub.on_get = lambda path: time.sleep(4) if path == "/slow" else None
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/slow"}),
        Reply.tool_call("finish", {"summary": "went on without the page"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch", agent_id=agent.name))
        result = await handle.result()

    assert result.status == SessionStatus.COMPLETED, result
    assert result.summary == "went on without the page"
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (answer,) = [m for m in tool_messages(messages) if m.name == "http_fetch"]
    assert answer.content.startswith("error: the call to http_fetch failed for good: "), answer
    assert "not run" not in answer.content
    assert "failed 2 times, the last without a result" in answer.content, answer.content
    assert "error: the call to http_fetch failed for good" in str(stub.requests[1].body)
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert call.payload["ok"] is False
