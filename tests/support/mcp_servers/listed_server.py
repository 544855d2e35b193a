"""An MCP server (stdio) whose tools are the names in a file given as its argument, one a
line: editing the file changes what the server lists (for ``vigil agent apply --refresh``).

    python tests/support/mcp_servers/listed_server.py TOOLS_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations


def build(names: list[str]) -> MCPServer:
    server = MCPServer("listed")
    for name in names:

        async def answer(text: str) -> str:
            if text.startswith("sleep:"):  # a call that keeps the server busy
                await asyncio.sleep(float(text.removeprefix("sleep:")))
            return text

        server.tool(name=name, annotations=ToolAnnotations(read_only_hint=True))(answer)
    return server


if __name__ == "__main__":
    listing = Path(sys.argv[1])
    if not listing.is_file():
        sys.exit(f"listed_server: no tools file {listing}")  # its stderr is the user's
    build(listing.read_text().split()).run()
