"""An MCP server with tools that behave and misbehave, over stdio or streamable HTTP.

    python tests/support/mcp_servers/probe_server.py                 # stdio
    python tests/support/mcp_servers/probe_server.py --http --port 0 --token SECRET

Over HTTP it binds 127.0.0.1 (port 0: a free one), prints ``PORT <n>`` once it listens,
and with ``--token`` answers 401 to any request without ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import ToolAnnotations

server = MCPServer("probe")
READ_ONLY = ToolAnnotations(read_only_hint=True)


@server.tool(annotations=READ_ONLY)
async def echo(text: str, times: int = 1) -> str:
    """Repeat a text."""
    return text * times


@server.tool(annotations=READ_ONLY)
async def pid() -> int:
    """The server's process id (tells a restarted server from the old one)."""
    return os.getpid()


@server.tool(annotations=READ_ONLY)
async def idempotency_key(ctx: Context) -> str:
    """The idempotency key the client sent with this call (empty when none)."""
    meta = ctx.request_context.meta or {}
    return str(meta.get("vigil/idempotency-key", ""))


@server.tool()
async def crash(last_words: str = "") -> str:
    """Kill the server in the middle of the call (writing ``last_words`` to stderr first)."""
    if last_words:
        sys.stderr.write(last_words + "\n")
        sys.stderr.flush()
    os._exit(3)


@server.tool(annotations=READ_ONLY)
async def log(text: str) -> str:
    """Write ``text`` to stderr (as a server logs what a call handled)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
    return "logged"


@server.tool()
async def hang(seconds: float = 3600) -> str:
    """Never answer (or only after ``seconds``)."""
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
async def append_line(path: str, line: str) -> str:
    """Append a line to a file (an effect outside vigil: it needs approval)."""
    await asyncio.to_thread(_append, path, line + "\n")
    return f"appended to {os.path.basename(path)}"


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


@server.tool()
async def fail(message: str) -> str:
    """Return an error result with ``message``."""
    raise ToolError(message)


@server.tool()
async def refuse(code: int, message: str) -> str:
    """Answer the call with a JSON-RPC error of ``code`` (not a tool result)."""
    raise MCPError(code, message)


def _guarded(app: Any, token: str) -> Any:
    expected = f"Bearer {token}".encode()

    async def guard(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guard


def serve_http(port: int, token: str | None) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    app = server.streamable_http_app()
    if token:
        app = _guarded(app, token)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    args = parser.parse_args()
    # A server slow to start (a package fetched, a model loaded): PROBE_START_DELAY seconds.
    time.sleep(float(os.environ.get("PROBE_START_DELAY", "0")))
    if args.http:
        serve_http(args.port, args.token)
    else:
        server.run()


if __name__ == "__main__":
    sys.exit(main())
