"""The catalog routes a tool call: run_tool is scheduled on the tool's own task queue (a
second worker there runs it) with the tool's timeout and attempts; other tools stay on the
session's queue."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, session_input, start, stub_settings
from vigil.activities.agents.catalog import describe_tools
from vigil.activities.record import agents as agent_rows
from vigil.schema import names
from vigil.schema.agents import AgentSpec, content_hash
from vigil.schema.payloads import RunToolInput, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_run_tool_goes_to_the_tools_queue(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    name = f"routed-{uuid.uuid4().hex[:8]}"
    tools_queue = f"{task_queue}-tools"
    spec = AgentSpec.model_validate(
        {
            "name": name,
            "tools": [
                {"name": "write_artifact", "timeout_seconds": 42, "max_attempts": 2},
                {"name": "read_artifact"},
            ],
        }
    )
    catalog = [t.model_dump(mode="json") for t in describe_tools(spec)]
    catalog[0]["task_queue"] = tools_queue  # as a tool served by a tool worker declares
    async with sessionmaker.begin() as db:
        await agent_rows.add_version(
            db,
            name,
            spec=spec.model_dump(mode="json"),
            content_hash=content_hash(spec),
            tools=catalog,
        )
    stub.enqueue(
        Reply.tool_calls(
            ("write_artifact", {"name": "n.txt", "content": "routed"}),
            ("read_artifact", {"name": "n.txt"}),
        ),
        Reply.tool_call("finish", {"summary": "routed"}),
    )
    cfg = stub_settings(settings, stub.url_openai)
    async with (
        running_worker(client, cfg, task_queue),
        running_worker(client, cfg, tools_queue),
    ):
        handle = await start(client, task_queue, session_input("route", agent_id=name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == names.ACT_RUN_TOOL
    ]
    # Temporal retries without limit; the activity counts its failures (max_failures).
    routes = [
        (
            a.task_queue.name,
            a.start_to_close_timeout.ToTimedelta().total_seconds(),
            (await client.data_converter.decode(list(a.input.payloads), [RunToolInput]))[
                0
            ].max_failures,
        )
        for a in scheduled
    ]
    assert routes[0] == (tools_queue, 42.0, 2)
    assert routes[1][0] == task_queue and routes[1][2] == 10
