"""Where and how long a catalog tool call runs: the run_tool activity's options.

Pure and deterministic (no I/O): the workflow reads a tool's catalog entry and gets the
task queue, timeouts and retry policy of its run_tool activity. A tool on its own queue
(a tool worker) gets a schedule-to-start limit, so a call that no worker picks up fails
instead of waiting forever; ``probe_tool_queue`` tells the workflow sooner, before the
first call, that no worker polls that queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

from vigil.schema import names
from vigil.schema.agents import ToolDescriptor
from vigil.workflows import constants as c

TOOL_CALL_NON_RETRYABLE = [*c.NON_RETRYABLE, names.ERR_TOOL_NOT_LOADED, names.ERR_TOOL_UNREACHABLE]


@dataclass(frozen=True)
class ToolActivityOptions:
    task_queue: str | None
    """None: the session's own queue."""
    start_to_close: timedelta
    schedule_to_start: timedelta | None
    retry: RetryPolicy


def run_tool_options(
    tool: ToolDescriptor | None, *, schedule_to_start: timedelta = c.TOOL_SCHEDULE_TO_START
) -> ToolActivityOptions:
    """The run_tool options of a call to ``tool`` (None or a built-in: as before catalogs).

    The tool's own timeout is enforced inside the activity (the model gets "timed out");
    start-to-close adds a margin for recording the result. Attempts cover the tool's
    ``max_attempts`` (``vigil.ToolRetry``) and leave room for our own infrastructure's
    transient failures.
    """
    if tool is None or tool.kind == "builtin":
        return ToolActivityOptions(None, c.TOOL_START_TO_CLOSE, None, c.TOOL_RETRY)
    timeout = (
        timedelta(seconds=tool.timeout_seconds) if tool.timeout_seconds else c.TOOL_DEFAULT_TIMEOUT
    )
    attempts = tool.max_attempts or c.TOOL_DEFAULT_MAX_ATTEMPTS
    retry = RetryPolicy(
        initial_interval=c.TOOL_RETRY.initial_interval,
        backoff_coefficient=c.TOOL_RETRY.backoff_coefficient,
        maximum_interval=c.TOOL_RETRY.maximum_interval,
        maximum_attempts=max(c.TOOL_RETRY.maximum_attempts, attempts + 2),
        non_retryable_error_types=TOOL_CALL_NON_RETRYABLE,
    )
    return ToolActivityOptions(
        task_queue=tool.task_queue,
        start_to_close=timeout + c.TOOL_RECORD_MARGIN,
        schedule_to_start=schedule_to_start if tool.task_queue else None,
        retry=retry,
    )


def unreachable_message(tool: str, task_queue: str) -> str:
    """The tool error of a call whose queue no worker serves."""
    return (
        f"tool {tool!r} runs on task queue {task_queue!r}, but no worker serves that queue; "
        f"start one with: vigil worker --tools MODULE --task-queue {task_queue} --tools-only"
    )
