"""A tiny workflow that routes one tool call the way a session does: probe the tool's queue,
then run the ``vigil.run_tool`` activity with the route of ``workflows.tool_routing``.

It stands in for the session's routing in activity-level tests (kept apart from the test
helpers that touch the database, since it runs in the workflow sandbox).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from vigil.schema import names
from vigil.schema.agents import AgentRuntime, ToolDescriptor
from vigil.schema.payloads import RunToolInput, RunToolOutput
from vigil.workflows.tool_routing import QueueProbe, tool_route


class AskedCall(RunToolInput):
    """run_tool's input, with the catalog entry the test's agent version holds."""

    tool: ToolDescriptor | None = None


class ToolCallCase(BaseModel):
    call: AskedCall
    probe: bool = True
    schedule_to_start_seconds: float = 60.0


class ToolCallOutcome(BaseModel):
    ok: bool
    preview: str = ""
    error_type: str | None = None
    """Set when the activity failed (no tool result was recorded)."""
    error: str | None = None


@workflow.defn(name="vigil-test.ToolCall")
class ToolCallWorkflow:
    @workflow.run
    async def run(self, case: ToolCallCase) -> ToolCallOutcome:
        call = case.call
        runtime = AgentRuntime(
            agent_id=call.agent_id,
            version=call.agent_version,
            tools=[call.tool] if call.tool else [],
        )
        name = call.tool.name if call.tool else ""
        route = tool_route(runtime, name)
        if route.task_queue is not None and route.schedule_to_start is not None:
            route = dataclasses.replace(
                route, schedule_to_start=timedelta(seconds=case.schedule_to_start_seconds)
            )
        if route.task_queue is not None and case.probe:
            unreachable = await QueueProbe().unreachable(name, route.task_queue)
            if unreachable is not None:
                return ToolCallOutcome(
                    ok=False, error_type=names.ERR_TOOL_UNREACHABLE, error=unreachable
                )
        try:
            out = await workflow.execute_activity(
                names.ACT_RUN_TOOL,
                RunToolInput.model_validate(call.model_dump(exclude={"tool"})),
                result_type=RunToolOutput,
                task_queue=route.task_queue,
                start_to_close_timeout=route.timeout,
                schedule_to_start_timeout=route.schedule_to_start,
                retry_policy=route.retry,
                heartbeat_timeout=timedelta(seconds=20),
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                return ToolCallOutcome(ok=False, error_type=cause.type, error=cause.message)
            if isinstance(cause, TimeoutError):
                return ToolCallOutcome(
                    ok=False, error_type=f"timeout:{cause.type.name}", error=str(cause)
                )
            raise
        return ToolCallOutcome(ok=out.ok, preview=out.preview)
