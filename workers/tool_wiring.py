"""The worker's tools: built-ins plus the Python tools it loads and its MCP connections;
and what ``vigil agent apply`` describes an agent's Python tools and MCP servers with.

Settings are read here, in the worker's wiring; ``activities.tools`` gets the results.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from vigil.activities.agents.catalog import ToolSources, UnknownTool
from vigil.activities.tools.loader import ToolLoadError, load_python_tools
from vigil.activities.tools.mcp import McpServerError, McpServers, list_mcp_tools
from vigil.activities.tools.mcp_connection import McpCredentials
from vigil.activities.tools.python import PythonTool, describe_python_tool
from vigil.activities.tools.runner import WorkerTools
from vigil.schema.agents import AgentSpec
from vigil.workers.settings import Settings


def python_tools(settings: Settings) -> dict[str, PythonTool[Any, Any]]:
    """``settings.tool_modules`` (and the ``vigil.tools`` entry points when enabled).
    Raises ToolLoadError."""
    return load_python_tools(settings.tool_module_list, entry_points=settings.tool_entry_points)


def worker_tools(settings: Settings, resolve_credential: McpCredentials) -> WorkerTools:
    """The worker's Python tools and MCP connections. ``resolve_credential`` turns an MCP
    server's credential name into its value (the worker's credential resolver).
    Raises ToolLoadError."""
    python = python_tools(settings)
    if settings.tools_only and not python:
        raise ToolLoadError("a tools-only worker needs tools: pass --tools MODULE")
    mcp = McpServers(
        resolve_credential,
        errlog=sys.stderr,
        idle_seconds=settings.mcp_idle_seconds,  # 0: never
        max_servers=settings.mcp_max_servers,
    )
    return WorkerTools(python, mcp, task_queue=settings.task_queue)


def tool_sourcing(
    settings: Settings, resolve_credential: McpCredentials
) -> Callable[[AgentSpec], Awaitable[ToolSources]]:
    """What an agent's tools offer when it is applied: the Python tools of the worker's
    modules (``settings.tool_modules``, the entry points), and each MCP server's tools,
    listed now (the server is started or reached once). Raises ToolLoadError."""
    python = {name: describe_python_tool(t) for name, t in python_tools(settings).items()}

    async def sources(spec: AgentSpec) -> ToolSources:
        listed = {}
        for k, server in enumerate(spec.mcp_servers):
            try:
                listed[server.name] = await list_mcp_tools(server, resolve_credential)
            except McpServerError as exc:
                raise UnknownTool(server.name, str(exc), ("mcp_servers", k)) from None
        return ToolSources(python=python, mcp=listed)

    return sources


def with_worker_flags(
    settings: Settings, tools: Sequence[str], task_queue: str | None, tools_only: bool
) -> Settings:
    """The worker's settings with its command-line flags applied.

    Tool modules are looked up from the current folder too (like ``python -m``), so
    ``vigil worker --tools mypackage.tools`` works from a project's root.
    """
    update: dict[str, object] = {}
    if tools:
        update["tool_modules"] = ",".join([*settings.tool_module_list, *tools])
    if task_queue:
        update["task_queue"] = task_queue
    if tools_only:
        update["tools_only"] = True
    if tools or settings.tool_module_list:
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    return settings.model_copy(update=update)
