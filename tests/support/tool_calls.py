"""Driving ``vigil.run_tool`` for one tool call through a real Temporal worker: an agent
version whose catalog holds the tool (and its MCP server) is applied, the assistant
message that asks for the call is written to the record, as call_model would, then the
test workflow routes the call."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.tool_call_workflow import (
    AskedCall,
    ToolCallCase,
    ToolCallOutcome,
    ToolCallWorkflow,
)
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import store as record
from vigil.activities.record.store import StoredEvent, StoredMessage
from vigil.activities.tools.queues import ToolQueueActivities
from vigil.schema.agents import AgentSpec, McpServerSpec, ToolDescriptor, content_hash
from vigil.workers.settings import Settings
from vigil.workers.temporal import new_worker
from vigil.workers.worker import Runtime, runtime


async def model_asked(
    sessionmaker: async_sessionmaker[DbSession],
    name: str,
    arguments: dict[str, Any] | str,
    *,
    tool: ToolDescriptor | None = None,
    mcp_server: McpServerSpec | None = None,
    agent: str | None = None,
    catalog: list[ToolDescriptor] | None = None,
) -> AskedCall:
    """A session of a new agent (or of ``agent``) whose catalog holds ``tool`` (or the
    whole ``catalog``; and whose spec names ``mcp_server``), whose model asked for one
    call (step 1, seq 1); run_tool's input."""
    session_id = f"tools-{uuid.uuid4()}"
    agent = agent or f"tools-test-{uuid.uuid4().hex[:12]}"
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    spec = AgentSpec(name=agent, mcp_servers=[mcp_server] if mcp_server else [])
    async with sessionmaker.begin() as db:
        await agent_rows.add_version(
            db,
            agent,
            spec=spec.model_dump(mode="json"),
            content_hash=content_hash(spec),
            tools=[t.model_dump(mode="json") for t in (catalog or ([tool] if tool else []))],
        )
        await record.create_session(
            db, session_id=session_id, agent_id=agent, goal="use a tool", status="running"
        )
        await record.append_messages(
            db,
            session_id,
            agent,
            [
                record.NewMessage(seq=0, role="user", content="use a tool", step=0),
                record.NewMessage(
                    seq=1,
                    role="assistant",
                    content="",
                    step=1,
                    tool_calls=[{"id": "call-1", "name": name, "arguments": raw}],
                ),
            ],
        )
    return AskedCall(
        session_id=session_id,
        agent_id=agent,
        step=1,
        seq=2,
        model_seq=1,
        call_index=0,
        agent_version=1,
        tool=tool,
    )


async def recorded(
    sessionmaker: async_sessionmaker[DbSession], call: AskedCall
) -> tuple[StoredMessage | None, StoredEvent | None]:
    """The tool's result message and its tool_call event, as recorded."""
    async with sessionmaker() as db:
        found = await record.messages_by_seq(db, call.session_id, [call.seq])
        event = await record.get_event(db, call.session_id, f"tool:{call.step}:{call.call_index}")
    return (found[0] if found else None), event


@dataclass
class ToolCaller:
    client: Client
    task_queue: str
    rt: Runtime

    async def call(
        self, call: AskedCall, *, probe: bool = True, schedule_to_start: float = 60.0
    ) -> ToolCallOutcome:
        case = ToolCallCase(call=call, probe=probe, schedule_to_start_seconds=schedule_to_start)
        out: ToolCallOutcome = await self.client.execute_workflow(
            ToolCallWorkflow.run,
            case,
            id=f"tool-call-{uuid.uuid4()}",
            task_queue=self.task_queue,
        )
        return out


@contextlib.asynccontextmanager
async def tool_caller(
    client: Client, settings: Settings, task_queue: str
) -> AsyncIterator[ToolCaller]:
    """A worker with the session's activities (and the tools ``settings`` loads) polling
    ``task_queue``, plus the test workflow that routes calls."""
    async with runtime(settings) as rt:
        activities = [*rt.activities.all(), *ToolQueueActivities().all()]
        worker = new_worker(
            client, task_queue=task_queue, workflows=[ToolCallWorkflow], activities=activities
        )
        async with worker:
            yield ToolCaller(client, task_queue, rt)
