"""``vigil tools``: vigil's built-in tools, what a worker would load, and what an MCP
server offers.

For people writing agent files and tools: the catalog entries (name, effects, JSON schema)
exactly as a session will see them, before any agent uses them.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    JsonOpt,
    StateOpt,
    fail,
    load_settings,
    out,
    plain,
)

if TYPE_CHECKING:
    from vigil.schema.agents import ToolDescriptor

tools_app = typer.Typer(
    help="Built-in tools, Python tools and MCP servers as agents see them.", no_args_is_help=True
)


@tools_app.command("list")
def tools_list(
    tools: Annotated[
        list[str] | None,
        typer.Option("--tools", help="Module with @vigil.tool functions (repeatable)."),
    ] = None,
    entry_points: Annotated[
        bool, typer.Option("--entry-points/--no-entry-points", help="Also the vigil.tools group.")
    ] = True,
    builtins: Annotated[
        bool, typer.Option("--builtins/--no-builtins", help="Also vigil's built-in tools.")
    ] = True,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The built-in tools, then the Python tools a worker with the same --tools would load.

    Python tools come from --tools, VIGIL_TOOL_MODULES and the vigil.tools entry points."""
    from vigil.activities.agents.catalog import describe_builtin
    from vigil.activities.tools.loader import ToolLoadError, load_python_tools
    from vigil.activities.tools.python import describe_python_tool
    from vigil.schema.agents import ToolEntry
    from vigil.schema.tools import BUILTIN_TOOLS
    from vigil.workers.tool_wiring import with_worker_flags

    settings = with_worker_flags(load_settings(state_dir), tools or [], None, False)
    try:
        loaded = load_python_tools(settings.tool_module_list, entry_points=entry_points)
    except ToolLoadError as exc:
        fail(str(exc), EXIT_USAGE)
    listed = [describe_python_tool(t) for _, t in sorted(loaded.items())]
    if builtins:
        described = (describe_builtin(ToolEntry(name=name)) for name in BUILTIN_TOOLS)
        listed = [d for d in described if d is not None] + listed
    _show(listed, as_json)


@tools_app.command("mcp")
def tools_mcp(
    name: Annotated[str, typer.Argument(help="The server's name in the agent file.")],
    command: Annotated[
        str | None, typer.Option("--command", help="Command of a stdio server, e.g. 'python s.py'.")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="Streamable HTTP URL.")] = None,
    credential: Annotated[
        str | None,
        typer.Option("--credential", help="Bearer credential (HTTP): env:NAME."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start (or reach) an MCP server once and list its tools as agents will see them."""
    from vigil.activities.tools.mcp import McpServerError, list_mcp_tools
    from vigil.schema.agents import McpServerSpec

    if (command is None) == (url is None):
        fail("give exactly one of --command or --url", EXIT_USAGE)
    try:
        spec = McpServerSpec(
            name=name,
            command=shlex.split(command) if command else None,
            url=url,
            credential=credential,
        )
    except ValueError as exc:
        fail(f"bad server: {exc}".splitlines()[0], EXIT_USAGE)
    try:
        listed = asyncio.run(list_mcp_tools(spec))
    except McpServerError as exc:
        fail(str(exc), EXIT_FAILED)
    _show(listed, as_json)


def _show(tools: list[ToolDescriptor], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps([t.model_dump(mode="json") for t in tools]))
        return
    if not tools:
        out.print("no tools")
        return
    table = Table("tool", "kind", "effects", "queue", "arguments", "description")
    for t in tools:
        row = (t.name, t.kind, t.effects, t.task_queue or "-", arguments(t.parameters))
        table.add_row(*plain(*row, t.description))  # an MCP server's text, shown harmlessly
    out.print(table)


def arguments(schema: dict[str, Any]) -> str:
    """A JSON schema's arguments in one line: ``name: type`` (``name?`` when optional)."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return ""
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    return ", ".join(
        f"{name}{'' if name in needed else '?'}: {_type(prop)}" for name, prop in props.items()
    )


def _type(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "any"
    if isinstance(prop.get("enum"), list):
        return "|".join(json.dumps(v) for v in prop["enum"])
    kind = prop.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    if kind == "array":
        return f"array of {_type(prop.get('items'))}"
    if isinstance(kind, str):
        return f"{kind} ({prop['format']})" if isinstance(prop.get("format"), str) else kind
    for union in ("anyOf", "oneOf"):
        if isinstance(prop.get(union), list):
            return "|".join(_type(p) for p in prop[union])
    return "any"
