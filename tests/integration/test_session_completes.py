"""A session calls tools, records every word in PostgreSQL, and finishes."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, start, stub_settings
from vigil.activities.record.store import messages_page
from vigil.schema.payloads import SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_tools_then_finish(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "fetched the page"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(
            client,
            task_queue,
            StartSessionInput(
                agent_id="agent-basic",
                goal="fetch the page",
                policy=ToolPolicy(require_approval=[]),
            ),
        )
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    assert result.summary == "fetched the page"
    assert result.steps == 2
    async with sessionmaker() as db:
        transcript = await messages_page(db, handle.id)
        status = (
            await db.execute(text("SELECT status FROM sessions WHERE id=:i"), {"i": handle.id})
        ).scalar_one()
    assert [m.role for m in transcript] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "system",
    ]
    assert [m.seq for m in transcript] == list(range(6))
    assert transcript[0].content == "fetch the page"
    assert transcript[2].name == "http_fetch" and transcript[2].content.startswith("HTTP ")
    assert status == "completed"
    # The model saw the tool result in the OpenAI wire format on its second call.
    second = stub.requests[1].body["messages"]
    assert (
        second[-1]["role"] == "tool"
        and second[-1]["tool_call_id"] == transcript[1].tool_calls[0]["id"]
    )
