"""Where a catalog tool call runs and for how long (pure; the workflow's side of routing),
and the public face of the tool decorator."""

from __future__ import annotations

from datetime import timedelta

import vigil
from vigil.schema import names
from vigil.schema.agents import ToolDescriptor
from vigil.schema.payloads import RunToolInput
from vigil.schema.tool_calls import ToolCallInput
from vigil.workflows import constants as c
from vigil.workflows.tool_routing import run_tool_options


def test_builtins_keep_the_session_queue_and_policy() -> None:
    for tool in (None, ToolDescriptor(name="http_fetch")):
        opts = run_tool_options(tool)
        assert (opts.task_queue, opts.schedule_to_start) == (None, None)
        assert opts.retry is c.TOOL_RETRY


def test_a_tool_worker_queue_gets_a_schedule_to_start_limit() -> None:
    gpu = ToolDescriptor(name="render", kind="python", task_queue="gpu", timeout_seconds=600)
    opts = run_tool_options(gpu)
    assert opts.task_queue == "gpu"
    assert opts.schedule_to_start == c.TOOL_SCHEDULE_TO_START
    assert opts.start_to_close == timedelta(seconds=600) + c.TOOL_RECORD_MARGIN
    assert names.ERR_TOOL_NOT_LOADED in (opts.retry.non_retryable_error_types or [])


def test_attempts_cover_the_tools_max_attempts() -> None:
    many = ToolDescriptor(name="flaky", kind="python", max_attempts=40)
    assert run_tool_options(many).retry.maximum_attempts >= 40
    local = run_tool_options(ToolDescriptor(name="echo", kind="mcp", server="probe"))
    assert local.schedule_to_start is None
    assert local.start_to_close == c.TOOL_DEFAULT_TIMEOUT + c.TOOL_RECORD_MARGIN


def test_a_plain_run_tool_input_decodes_as_a_tool_call_input() -> None:
    old = RunToolInput(session_id="s", agent_id="a", step=1, seq=2, model_seq=1, call_index=0)
    new = ToolCallInput.model_validate_json(old.model_dump_json())
    assert new.tool is None and new.mcp_server is None and new.seq == 2


def test_the_face_exports_the_tool_api() -> None:
    from vigil.activities.tools import python

    assert vigil.tool is python.tool and vigil.ToolContext is python.ToolContext
    assert {"tool", "ToolContext", "ToolRetry", "ToolFailed", "PythonTool"} <= set(dir(vigil))
