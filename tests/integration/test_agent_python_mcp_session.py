"""An agent whose file names a Python tool and an MCP server (stdio) completes a session:
the model (the LLM stub, OpenAI and Anthropic protocols) is offered both, the MCP tool as
``probe__echo`` (the APIs refuse dots), and calls them; the worker runs both and the
model reads their results."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.agent_tools import apply_agent, worker_settings
from tests.support.llm_stub import LLMStub, Reply
from tests.support.mcp_probe import stdio_spec
from tests.support.sessions import events, running_worker, session_input, start, transcript
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_python_and_mcp_tools_in_one_session(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
    protocol: str,
) -> None:
    agent = await apply_agent(
        settings,
        sessionmaker,
        tmp_path,
        ["word_count"],
        [stdio_spec(tools=["echo"])],
        modules=["tests.support.py_tools"],
    )
    stub.enqueue(
        Reply.tool_calls(
            ("word_count", {"text": "one two three"}), ("probe__echo", {"text": "ab", "times": 2})
        ),
        Reply.tool_call("finish", {"summary": "counted and echoed"}),
    )
    url = stub.url_openai if protocol == "openai" else stub.url_anthropic
    cfg = worker_settings(settings, url, "tests.support.py_tools")
    cfg = cfg.model_copy(update={"model_provider": protocol})
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("count", agent_id=agent.name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert result.summary == "counted and echoed"

    tool_results = [(m.name, m.content) for m in await transcript(sessionmaker, handle.id)]
    assert ("word_count", '{"words": 3, "lines": 1}') in tool_results
    assert ("probe.echo", "abab") in tool_results
    ran = {e.payload["tool"]: e.payload for e in await events(sessionmaker, handle.id, "tool_call")}
    assert ran["probe.echo"]["ok"] and ran["word_count"]["ok"]

    first, second = stub.requests
    offered = (
        [t["function"]["name"] for t in first.body["tools"]]
        if protocol == "openai"
        else [t["name"] for t in first.body["tools"]]
    )
    assert offered == ["word_count", "probe__echo", "finish"]
    # The model's second turn reads both results, its own calls named as it sent them.
    sent = str(second.body["messages"])
    assert "abab" in sent and "probe__echo" in sent and "probe.echo" not in sent
    assert not stub.errors, stub.errors
