"""Where and how long a tool call runs, and what a session does when nobody serves it.

One routing function for every call (``tool_route``): the pinned catalog's entry gives
the task queue, timeout and attempts of the ``run_tool`` activity. Built-ins keep the
session's queue unless the catalog says otherwise, their timeout enforced by Temporal.
Python and MCP tools enforce their own timeout and attempts inside the activity (the
model is told "timed out"), so Temporal's limits leave a margin; a tool on its own queue
(a tool worker) gets a schedule-to-start limit, so a call no worker picks up ends
instead of waiting forever.

Nobody serving a call is not the model's fault, and not worth ending a session over: the
queue is probed before its first call (``QueueProbe``), and a queue without pollers, a
worker that does not load the tool (``ToolNotLoaded``) or a schedule-to-start timeout all
become the call's tool error (``unserved``), recorded and sent back to the model, which
can try something else. Deterministic: no I/O but the probe activity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
    is_cancelled_exception,
)

from vigil.schema import names
from vigil.schema.agents import AgentRuntime
from vigil.schema.tool_calls import ProbeToolQueueInput, ProbeToolQueueOutput
from vigil.workflows import agents
from vigil.workflows import constants as c

TOOL_CALL_NON_RETRYABLE = [*c.NON_RETRYABLE, names.ERR_TOOL_NOT_LOADED, names.ERR_TOOL_UNREACHABLE]


@dataclass(frozen=True)
class ToolRoute:
    """Where and how long ``run_tool`` runs for one call."""

    task_queue: str | None
    """None: the session's own queue."""
    timeout: timedelta
    """Start-to-close."""
    retry: RetryPolicy
    schedule_to_start: timedelta | None = None


def tool_route(runtime: AgentRuntime | None, name: str) -> ToolRoute:
    """The route of a call to ``name`` under the pinned catalog (None, or a tool outside
    it: the session's queue and the default policy)."""
    tool = agents.descriptor(runtime, name) if agents.defined(runtime) else None
    if tool is None:
        return ToolRoute(None, c.TOOL_START_TO_CLOSE, c.TOOL_RETRY)
    if tool.kind == "builtin":
        timeout = c.TOOL_START_TO_CLOSE
        if tool.timeout_seconds is not None:
            timeout = timedelta(seconds=tool.timeout_seconds)
        retry = c.TOOL_RETRY
        if tool.max_attempts is not None:
            retry = dataclasses.replace(retry, maximum_attempts=tool.max_attempts)
        return ToolRoute(tool.task_queue, timeout, retry)
    limit = (
        timedelta(seconds=tool.timeout_seconds) if tool.timeout_seconds else c.TOOL_DEFAULT_TIMEOUT
    )
    # The tool's own attempts (vigil.ToolRetry) are counted by the activity; Temporal's
    # leave room besides for a lost worker.
    attempts = tool.max_attempts or c.TOOL_DEFAULT_MAX_ATTEMPTS
    retry = dataclasses.replace(
        c.TOOL_RETRY,
        maximum_attempts=max(c.TOOL_RETRY.maximum_attempts, attempts + 2),
        non_retryable_error_types=TOOL_CALL_NON_RETRYABLE,
    )
    return ToolRoute(
        task_queue=tool.task_queue,
        timeout=limit + c.TOOL_RECORD_MARGIN,
        retry=retry,
        schedule_to_start=c.TOOL_SCHEDULE_TO_START if tool.task_queue else None,
    )


def unreachable_message(tool: str, task_queue: str) -> str:
    """The tool error of a call whose queue no worker serves."""
    return (
        f"tool {tool!r} runs on task queue {task_queue!r}, but no worker serves that queue; "
        f"start one with: vigil worker --tools MODULE --task-queue {task_queue} --tools-only"
    )


def unserved(exc: ActivityError, tool: str, route: ToolRoute) -> str | None:
    """Why nobody ran the call (the worker that took it does not load the tool, or no
    worker took it in time); None for any other failure."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type == names.ERR_TOOL_NOT_LOADED:
        return cause.message
    if (
        isinstance(cause, TimeoutError)
        and cause.type == TimeoutType.SCHEDULE_TO_START
        and route.task_queue is not None
    ):
        return unreachable_message(tool, route.task_queue)
    return None


GAVE_UP = frozenset({names.ERR_ACTIVITY_FAILED, names.ERR_TOOL_RETRY})
"""The failures of a call that spent its attempts (errors of the activity's own, a
tool's retries): the model's tool error. Any other type (a call that is not the approved
one, one missing from the record, input no session can take) still ends the session."""


def failed_for_good(exc: ActivityError, tool: str) -> str | None:
    """The tool error of a call whose activity spent its attempts, on errors or on time
    limits that passed; None for any other failure, and for a cancel."""
    cause = exc.cause
    if is_cancelled_exception(exc) or isinstance(cause, CancelledError):
        return None
    if isinstance(cause, TimeoutError) or (
        isinstance(cause, ApplicationError) and cause.type in GAVE_UP
    ):
        return f"the call to {tool} failed for good: {cause.message or type(cause).__name__}"
    return None


class QueueProbe:
    """Asks Temporal whether a worker polls a tool's queue before the run's first call
    there. A queue found served is not asked again this run; an empty one is, so a tool
    worker started later is found."""

    def __init__(self) -> None:
        self._served: set[str] = set()

    async def unreachable(self, tool: str, task_queue: str) -> str | None:
        """The tool error when no worker polls ``task_queue``; None when one does."""
        if task_queue in self._served:
            return None
        found = await workflow.execute_activity(
            names.ACT_PROBE_TOOL_QUEUE,
            ProbeToolQueueInput(task_queue=task_queue),
            result_type=ProbeToolQueueOutput,
            start_to_close_timeout=c.TOOL_PROBE_START_TO_CLOSE,
            retry_policy=c.RECORD_RETRY,
            summary=f"who serves {task_queue}",
        )
        if found.pollers == 0:
            return unreachable_message(tool, task_queue)
        self._served.add(task_queue)
        return None
