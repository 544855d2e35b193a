"""Agents with Python tools and MCP servers for session tests: an agent file applied with
the code of ``vigil agent apply`` (its Python tools loaded, its MCP servers listed), and
worker settings that load the same tool modules."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.sessions import stub_settings
from vigil.schema.agents import McpServerSpec
from vigil.workers.agents import AppliedAgent, apply_files
from vigil.workers.settings import Settings


def agent_toml(
    name: str,
    tools: Sequence[str | dict[str, Any]],
    servers: Sequence[McpServerSpec] = (),
    **extra: Any,
) -> str:
    """The text of an agent file (TOML), as a user writes it (strings, numbers, lists)."""

    def value(v: Any) -> str:
        return json.dumps(v)  # a JSON string, number or list of them is TOML too

    lines = [f"name = {value(name)}"]
    lines += [f"{k} = {value(v)}" for k, v in extra.items()]
    for tool in tools:
        entry = {"name": tool} if isinstance(tool, str) else tool
        lines += ["", "[[tools]]", *(f"{k} = {value(v)}" for k, v in entry.items())]
    for server in servers:
        fields = server.model_dump(exclude_defaults=True)
        lines += ["", "[[mcp_servers]]", *(f"{k} = {value(v)}" for k, v in fields.items())]
    return "\n".join(lines) + "\n"


async def apply_agent(
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    tmp_path: Path,
    tools: Sequence[str | dict[str, Any]],
    servers: Sequence[McpServerSpec] = (),
    *,
    modules: Sequence[str] = (),
    prefix: str = "tooled",
) -> AppliedAgent:
    """Write an agent file and apply it as `vigil agent apply --tools MODULE ... FILE`."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.toml"
    path.write_text(agent_toml(name, tools, servers), encoding="utf-8")
    cfg = settings.model_copy(update={"tool_entry_points": False})
    (applied,) = await apply_files(cfg, sessionmaker, [path], tools=list(modules), by="test")
    return applied


def worker_settings(settings: Settings, model_url: str, *modules: str) -> Settings:
    """A session worker on the stub that loads ``modules`` (``vigil worker --tools``)."""
    return stub_settings(
        settings, model_url, tool_modules=",".join(modules), tool_entry_points=False
    )
