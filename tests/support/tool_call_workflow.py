"""A tiny workflow that routes one tool call the way a session will: probe the tool's queue,
then run the ``vigil.run_tool`` activity with the options of ``workflows.tool_routing``.

It stands in for the session's routing in activity-level tests (kept apart from the test
helpers that touch the database, since it runs in the workflow sandbox).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from vigil.schema import names
from vigil.schema.payloads import RunToolOutput
from vigil.schema.tool_calls import ProbeToolQueueInput, ProbeToolQueueOutput, ToolCallInput
from vigil.workflows import constants as c
from vigil.workflows.tool_routing import run_tool_options, unreachable_message


class ToolCallCase(BaseModel):
    call: ToolCallInput
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
        tool = case.call.tool
        opts = run_tool_options(
            tool, schedule_to_start=timedelta(seconds=case.schedule_to_start_seconds)
        )
        if tool is not None and opts.task_queue is not None and case.probe:
            probe = await workflow.execute_activity(
                names.ACT_PROBE_TOOL_QUEUE,
                ProbeToolQueueInput(task_queue=opts.task_queue),
                result_type=ProbeToolQueueOutput,
                start_to_close_timeout=c.TOOL_PROBE_START_TO_CLOSE,
            )
            if probe.pollers == 0:
                return ToolCallOutcome(
                    ok=False,
                    error_type=names.ERR_TOOL_UNREACHABLE,
                    error=unreachable_message(tool.name, opts.task_queue),
                )
        try:
            out = await workflow.execute_activity(
                names.ACT_RUN_TOOL,
                case.call,
                result_type=RunToolOutput,
                task_queue=opts.task_queue,
                start_to_close_timeout=opts.start_to_close,
                schedule_to_start_timeout=opts.schedule_to_start,
                retry_policy=opts.retry,
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
