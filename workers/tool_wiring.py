"""The worker's tools: built-ins plus the Python tools it loads and its MCP connections.

Settings are read here, in the worker's wiring; ``activities.tools`` gets the results.
"""

from __future__ import annotations

import os
import sys

from vigil.activities.tools.loader import ToolLoadError, load_python_tools
from vigil.activities.tools.mcp import McpServers
from vigil.activities.tools.mcp_connection import CredentialResolver, env_credential
from vigil.activities.tools.runner import WorkerTools
from vigil.workers.settings import Settings


def worker_tools(
    settings: Settings, resolve_credential: CredentialResolver | None = None
) -> WorkerTools:
    """Load ``settings.tool_modules`` (and the ``vigil.tools`` entry points when enabled).

    ``resolve_credential`` turns an MCP server's credential name into its value; the
    environment variable of that name by default. Raises ToolLoadError.
    """
    python = load_python_tools(settings.tool_module_list, entry_points=settings.tool_entry_points)
    if settings.tools_only and not python:
        raise ToolLoadError("a tools-only worker needs tools: pass --tools MODULE")
    mcp = McpServers(resolve_credential or env_credential, errlog=sys.stderr)
    return WorkerTools(python, mcp, task_queue=settings.task_queue)


def with_worker_flags(
    settings: Settings, tools: list[str], task_queue: str | None, tools_only: bool
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
