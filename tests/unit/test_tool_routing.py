"""Where a tool call runs and for how long: one routing function for built-ins, Python
and MCP tools (pure; the workflow's side of routing), the error of a call nobody serves,
and the public face of the tool decorator."""

from __future__ import annotations

from datetime import timedelta

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

import vigil
from vigil.schema import names
from vigil.schema.agents import AgentRuntime, ToolDescriptor
from vigil.workflows import constants as c
from vigil.workflows.tool_routing import ToolRoute, tool_route, unreachable_message, unserved


def runtime(*tools: ToolDescriptor) -> AgentRuntime:
    return AgentRuntime(agent_id="a", version=1, tools=list(tools))


def test_without_a_definition_every_call_keeps_the_session_queue_and_policy() -> None:
    for rt in (None, AgentRuntime(agent_id="a")):
        route = tool_route(rt, "http_fetch")
        assert route == ToolRoute(None, c.TOOL_START_TO_CLOSE, c.TOOL_RETRY)


def test_a_builtin_takes_its_timeout_queue_and_attempts_from_the_catalog() -> None:
    write = ToolDescriptor(name="write_artifact", timeout_seconds=5)
    read = ToolDescriptor(name="read_artifact", task_queue="gpu", max_attempts=2)
    route = tool_route(runtime(write, read), "write_artifact")
    assert route.timeout == timedelta(seconds=5) and route.task_queue is None
    route = tool_route(runtime(write, read), "read_artifact")
    assert route.task_queue == "gpu" and route.retry.maximum_attempts == 2
    assert route.schedule_to_start is None
    assert tool_route(runtime(write), "not_in_catalog").retry is c.TOOL_RETRY


def test_a_tool_worker_queue_gets_a_schedule_to_start_limit() -> None:
    gpu = ToolDescriptor(name="render", kind="python", task_queue="gpu", timeout_seconds=600)
    route = tool_route(runtime(gpu), "render")
    assert route.task_queue == "gpu"
    assert route.schedule_to_start == c.TOOL_SCHEDULE_TO_START
    assert route.timeout == timedelta(seconds=600) + c.TOOL_RECORD_MARGIN
    assert names.ERR_TOOL_NOT_LOADED in (route.retry.non_retryable_error_types or [])


def test_attempts_cover_the_tools_max_attempts() -> None:
    many = ToolDescriptor(name="flaky", kind="python", max_attempts=40)
    assert tool_route(runtime(many), "flaky").retry.maximum_attempts >= 40
    echo = ToolDescriptor(name="probe.echo", kind="mcp", server="probe")
    local = tool_route(runtime(echo), "probe.echo")
    assert local.schedule_to_start is None and local.task_queue is None
    assert local.timeout == c.TOOL_DEFAULT_TIMEOUT + c.TOOL_RECORD_MARGIN


def _failed(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "activity failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type=names.ACT_RUN_TOOL,
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    error.__cause__ = cause
    return error


def test_unserved_calls_are_told_apart_from_failures() -> None:
    gpu = tool_route(runtime(ToolDescriptor(name="r", kind="python", task_queue="gpu")), "r")
    missing = ApplicationError("tool 'r' is not loaded", type=names.ERR_TOOL_NOT_LOADED)
    assert unserved(_failed(missing), "r", gpu) == "tool 'r' is not loaded"
    late = TimeoutError("", type=TimeoutType.SCHEDULE_TO_START, last_heartbeat_details=[])
    assert unserved(_failed(late), "r", gpu) == unreachable_message("r", "gpu")
    crashed = ApplicationError("boom", type=names.ERR_ACTIVITY_FAILED)
    assert unserved(_failed(crashed), "r", gpu) is None
    closed = TimeoutError("", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
    assert unserved(_failed(closed), "r", gpu) is None


def test_the_face_exports_the_tool_api() -> None:
    from vigil.activities.tools import python

    assert vigil.tool is python.tool and vigil.ToolContext is python.ToolContext
    assert {"tool", "ToolContext", "ToolRetry", "ToolFailed", "PythonTool"} <= set(dir(vigil))
