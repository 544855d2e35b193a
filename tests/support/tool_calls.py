"""Driving ``vigil.run_tool`` for one tool call through a real Temporal worker: the
assistant message that asks for the call is written to the record first, as call_model
would, then the test workflow routes the call."""

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

from tests.support.tool_call_workflow import ToolCallCase, ToolCallOutcome, ToolCallWorkflow
from vigil.activities.record import store as record
from vigil.activities.record.store import StoredEvent, StoredMessage
from vigil.activities.tools.queues import ToolQueueActivities
from vigil.schema.agents import McpServerSpec, ToolDescriptor
from vigil.schema.tool_calls import ToolCallInput
from vigil.workers.settings import Settings
from vigil.workers.temporal import new_worker
from vigil.workers.worker import Runtime, runtime

AGENT = "tools-test"


async def model_asked(
    sessionmaker: async_sessionmaker[DbSession],
    name: str,
    arguments: dict[str, Any] | str,
    *,
    tool: ToolDescriptor | None = None,
    mcp_server: McpServerSpec | None = None,
) -> ToolCallInput:
    """A session whose model asked for one call (step 1, seq 1); run_tool's input for it."""
    session_id = f"tools-{uuid.uuid4()}"
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=session_id, agent_id=AGENT, goal="use a tool", status="running"
        )
        await record.append_messages(
            db,
            session_id,
            AGENT,
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
    return ToolCallInput(
        session_id=session_id,
        agent_id=AGENT,
        step=1,
        seq=2,
        model_seq=1,
        call_index=0,
        tool=tool,
        mcp_server=mcp_server,
    )


async def recorded(
    sessionmaker: async_sessionmaker[DbSession], call: ToolCallInput
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
        self, call: ToolCallInput, *, probe: bool = True, schedule_to_start: float = 60.0
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
