"""The folded step: one server round trip per step on the usual path (deterministic).

Sessions under ``PATCH_FOLDED_STEP`` let ``call_model`` run the reply's leading tool calls
itself, right after the model answers, when nothing about them needs the workflow: the
tool needs no approval whatever its arguments, runs on the session's own queue, is a
built-in and keeps the default time and attempts. The first call that is anything else
(invalid, approval, another queue, a long or retried tool) stops the fold: it and every
later call keep their own ``run_tool`` activity, in order, as before. A control tool
(``finish``, ``ask_human``, ``wait_until``) is checked by the activity as run_tool checks
it and ends the fold: its ``control`` reaches the workflow, which waits or ends there.

Seqs stay the workflow's: call ``i`` of the reply at ``seq`` is always answered at
``seq + 1 + i`` (the workflow allocates them in call order exactly so), so the activity
writes where the workflow would have, and a session that ends inside the step has the
record close it (``RecordInput.open_step_seq``).

The agent's ``[model] execution = "local"`` makes the model call a local activity.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from vigil.schema import names
from vigil.schema.agents import AgentRuntime
from vigil.schema.payloads import ToolCallRef, ToolPolicy
from vigil.workflows import agents, tool_routing

M = TypeVar("M")

LOCAL_RETRY_THRESHOLD = timedelta(seconds=30)
"""A local model call retried later than this waits on a durable timer instead of in
the worker (Temporal's default is a minute)."""


def foldable_tools(
    runtime: AgentRuntime | None,
    policy: ToolPolicy,
    allowed: list[str],
    rules_over_never: Callable[[], bool] = lambda: False,
) -> list[str]:
    """The tools ``call_model`` may run itself for this session. ``rules_over_never`` as
    ``agents.needs_approval`` takes it (a tool whose rules may ask is not folded)."""
    return [name for name in allowed if _foldable(runtime, policy, name, rules_over_never)]


def _foldable(
    runtime: AgentRuntime | None,
    policy: ToolPolicy,
    name: str,
    rules_over_never: Callable[[], bool],
) -> bool:
    tool = agents.descriptor(runtime, name)
    if tool is None or tool.kind != "builtin":
        return False
    if tool.timeout_seconds is not None or tool.max_attempts is not None:
        return False  # its own limits are the run_tool activity's
    if tool_routing.tool_route(runtime, name).task_queue is not None:
        return False
    # Approval may hang on the arguments (approve_when): ask as if a rule matched.
    probe = ToolCallRef(index=0, call_id="", name=name, valid=True, rule_matched=True)
    return not agents.needs_approval(runtime, policy, probe, rules_over_never=rules_over_never)


def local_model_call(runtime: AgentRuntime | None) -> bool:
    """Whether the agent asked for its model calls as local activities."""
    return runtime is not None and runtime.model.execution == "local"


def worker_not_ready(exc: ActivityError) -> bool:
    """Whether a low-latency model call failed because its worker is not set up for it
    (``ERR_WORKER_NOT_READY``), in a session that moves such a call to a regular activity
    (``PATCH_LOCAL_CALL_MOVES``, asked only then)."""
    cause = exc.cause
    return (
        isinstance(cause, ApplicationError)
        and cause.type == names.ERR_WORKER_NOT_READY
        and workflow.patched(names.PATCH_LOCAL_CALL_MOVES)
    )


async def run_local(
    name: str,
    arg: Any,
    result: type[M],
    *,
    limit: timedelta,
    retry: RetryPolicy,
    summary: str,
    implied: bool = False,
) -> M:
    """An activity of the low-latency mode, as a local activity: retried in the worker up
    to ``LOCAL_RETRY_THRESHOLD``, on a durable timer after that.

    A local activity's failure reaches the workflow bare (the activity's own error), where
    a regular activity's arrives as an ``ActivityError`` around it: it is wrapped the same
    way here, so the session handles both alike (a failure for good ends the session with
    its record, a refused agent version is recorded and the session goes on). Histories
    from before that (``PATCH_LOCAL_FAILURES``; ``implied``: the session is newer) failed
    the workflow there, and replay so."""
    try:
        out: M = await workflow.execute_local_activity(
            name,
            arg,
            result_type=result,
            start_to_close_timeout=limit,
            retry_policy=retry,
            local_retry_threshold=LOCAL_RETRY_THRESHOLD,
            summary=summary,
        )
    except ActivityError:
        raise
    except FailureError as failed:
        if not (implied or workflow.patched(names.PATCH_LOCAL_FAILURES)):
            raise
        raise ActivityError(
            str(failed) or f"local activity {name} failed",
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=name,
            activity_id="",
            retry_state=None,
        ) from failed
    return out
