"""The tools a worker offers beyond the built-ins, and how run_tool runs them.

``WorkerTools`` is the worker's registry of catalog tools: the Python tools it loaded
(``--tools``, the ``vigil.tools`` entry points) and its MCP connections. run_tool hands it
a call whose catalog entry (``ToolDescriptor``) says ``python`` or ``mcp``; built-ins stay
with ``activities.tools.registry``. A Python tool this worker did not load is a
non-retryable ``ToolNotLoaded`` failure, never a call that waits for a worker that will
not come.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pydantic_core
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from vigil.activities.tools.mcp import McpServers, mcp_tool_name
from vigil.activities.tools.python import (
    DATA_LIMIT,
    PythonTool,
    SessionArtifacts,
    ToolArgumentsInvalid,
    ToolContext,
    ToolRetry,
)
from vigil.activities.tools.registry import ToolFailed, ToolOutcome
from vigil.schema import names
from vigil.schema.agents import McpServerSpec, ToolDescriptor
from vigil.workflows import constants as c


@dataclass(frozen=True)
class ToolCallInfo:
    """Which call of which session a tool serves."""

    session_id: str
    agent_id: str
    step: int
    call_index: int
    call_id: str
    idempotency_key: str
    attempt: int = 1
    counted: int | None = None
    """The attempt's number as the tool's ``max_attempts`` counts it (outages and worker
    shutdowns before it not counted); None: ``attempt``."""


class WorkerTools:
    """Python tools loaded by this worker and its MCP servers; closed with the worker."""

    def __init__(
        self,
        python: Mapping[str, PythonTool[Any, Any]] | None = None,
        mcp: McpServers | None = None,
        *,
        task_queue: str = "",
    ) -> None:
        self.python: dict[str, PythonTool[Any, Any]] = dict(python or {})
        self.mcp = mcp or McpServers()
        self.task_queue = task_queue

    async def run(
        self,
        tool: ToolDescriptor,
        arguments: dict[str, Any],
        call: ToolCallInfo,
        *,
        artifacts: SessionArtifacts | None,
        mcp_server: McpServerSpec | None = None,
    ) -> ToolOutcome:
        """One attempt of a call. ToolFailed: an error for the model. ApplicationError:
        ToolNotLoaded (non-retryable) or ToolRetry (retryable, attempts left)."""
        if tool.kind == "python":
            return await self._run_python(tool, arguments, call, artifacts)
        if tool.kind == "mcp":
            if mcp_server is None or mcp_server.name != tool.server:
                raise ToolFailed(f"the MCP server {tool.server!r} of {tool.name} is not configured")
            timeout = tool.timeout_seconds or mcp_server.timeout_seconds or _default_timeout()
            return await self.mcp.call(
                mcp_server,
                mcp_tool_name(tool),
                arguments,
                timeout=timeout,
                idempotency_key=call.idempotency_key,
                agent=call.agent_id,
            )
        raise ToolFailed(f"{tool.name} is a built-in tool")

    async def _run_python(
        self,
        tool: ToolDescriptor,
        arguments: dict[str, Any],
        call: ToolCallInfo,
        artifacts: SessionArtifacts | None,
    ) -> ToolOutcome:
        loaded = self.python.get(tool.name)
        if loaded is None:
            message = not_loaded_message(tool.name, self.task_queue, sorted(self.python))
            activity.logger.warning(message)
            # Benign: explained in one line above, not a crash worth a traceback.
            raise ApplicationError(
                message,
                type=names.ERR_TOOL_NOT_LOADED,
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            )
        context = ToolContext(
            session_id=call.session_id,
            agent_id=call.agent_id,
            step=call.step,
            tool=tool.name,
            call_id=call.call_id,
            idempotency_key=call.idempotency_key,
            attempt=call.attempt,
            artifacts=artifacts,
        )

        async def attempt() -> ToolOutcome:
            return render_result(await loaded.invoke(arguments, context))

        return await call_with_limits(
            attempt,
            name=tool.name,
            timeout_seconds=tool.timeout_seconds or loaded.timeout_seconds or _default_timeout(),
            attempt=call.counted or call.attempt,
            max_attempts=tool.max_attempts or loaded.max_attempts or c.TOOL_DEFAULT_MAX_ATTEMPTS,
        )

    async def aclose(self) -> None:
        await self.mcp.aclose()


def not_loaded_message(tool: str, task_queue: str, loaded: list[str]) -> str:
    where = f" (task queue {task_queue})" if task_queue else ""
    offered = ", ".join(loaded) or "none"
    return (
        f"tool {tool!r} is not loaded on this worker{where}; it offers {offered}. "
        f"Start a worker with --tools MODULE that provides it"
    )


def _default_timeout() -> float:
    return c.TOOL_DEFAULT_TIMEOUT.total_seconds()


def render_result(value: object) -> ToolOutcome:
    """A tool's return value as text for the model: str as is, anything else as JSON."""
    if isinstance(value, str):
        return ToolOutcome(value)
    if value is None:
        return ToolOutcome("done")
    plain = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    try:
        jsonable = pydantic_core.to_jsonable_python(plain)
        text = json.dumps(jsonable, ensure_ascii=False)
    except (TypeError, ValueError, pydantic_core.PydanticSerializationError):
        return ToolOutcome(str(value))
    data = jsonable if isinstance(jsonable, dict) and len(text) <= DATA_LIMIT else None
    return ToolOutcome(text, data)


async def call_with_limits(
    run: Callable[[], Awaitable[ToolOutcome]],
    *,
    name: str,
    timeout_seconds: float,
    attempt: int,
    max_attempts: int,
) -> ToolOutcome:
    """Run one attempt of a tool under its timeout; errors become ToolFailed (back to the
    model) or, for ``ToolRetry`` with attempts left, a retryable activity failure."""
    try:
        async with asyncio.timeout(timeout_seconds) as deadline:
            return await run()
    except ToolRetry as exc:
        if attempt < max_attempts:
            delay = exc.retry_after_seconds
            raise ApplicationError(
                f"tool {name} asked for a retry (attempt {attempt} of {max_attempts}): "
                f"{_short(str(exc))}",
                type=names.ERR_TOOL_RETRY,
                next_retry_delay=None if delay is None else _seconds(delay),
                category=ApplicationErrorCategory.BENIGN,  # an expected retry, no traceback
            ) from None
        raise ToolFailed(
            f"tool {name} failed after {attempt} attempts: {_short(str(exc))}"
        ) from None
    except ToolFailed:
        raise
    except ToolArgumentsInvalid as exc:
        raise ToolFailed(str(exc)) from None
    except TimeoutError:
        if deadline.expired():
            raise ToolFailed(f"tool {name} timed out after {timeout_seconds:g}s") from None
        raise ToolFailed(f"tool {name} failed: TimeoutError") from None
    except asyncio.CancelledError:
        raise
    # A tool's bug goes back to the model, not the session; so does a sys.exit or a
    # KeyboardInterrupt of its own (the worker takes SIGINT as a signal, never as one).
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        detail = f": {_short(str(exc))}" if str(exc) else ""
        raise ToolFailed(f"tool {name} failed: {exc.__class__.__name__}{detail}") from None


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=max(0.0, value))
