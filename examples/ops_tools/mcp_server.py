"""A small MCP server (stdio) written with the official ``mcp`` SDK. An agent file names it
with ``command = ["python", "examples/ops_tools/mcp_server.py"]``; vigil's worker starts it
on first use, reuses it, and restarts it if it dies."""

from __future__ import annotations

import hashlib
import re

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("ops")
READ_ONLY = ToolAnnotations(read_only_hint=True)  # no effects: no approval needed by default

LEVEL = re.compile(r"\b(DEBUG|INFO|WARN(?:ING)?|ERROR|CRITICAL|FATAL)\b")


@server.tool(annotations=READ_ONLY)
async def log_levels(log: str) -> dict[str, int]:
    """Count the lines of a log by level (ERROR, WARNING, INFO, ...)."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        match = LEVEL.search(line)
        level = match.group(1).replace("WARNING", "WARN") if match else "OTHER"
        counts[level] = counts.get(level, 0) + 1
    return counts


@server.tool(annotations=READ_ONLY)
async def checksum(text: str) -> str:
    """The sha256 of a text (UTF-8), in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


if __name__ == "__main__":
    server.run()
