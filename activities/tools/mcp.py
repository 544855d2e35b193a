"""MCP servers as tool providers, through the official ``mcp`` SDK.

A server is a command speaking stdio or a streamable HTTP URL (with a bearer credential
named in the agent file and resolved at call time by an injected callable, the
environment by default). A worker keeps one connection per server, started on first use
and reused by every call; a server that died is started again on the next call, and a call
that hangs past its timeout resets the connection (a stdio server is stopped and started
again), so one stuck call never poisons the next. Everything a server does wrong becomes a
``ToolFailed`` whose short message goes back to the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from mcp import MCPError
from mcp import types as mcp_types
from pydantic import ValidationError

from vigil.activities.tools.mcp_connection import (
    START_TIMEOUT_SECONDS,
    McpConnection,
    McpCredentials,
    env_credential,
    error_text,
    short_text,
)
from vigil.activities.tools.python import DATA_LIMIT
from vigil.activities.tools.registry import ToolFailed, ToolOutcome
from vigil.schema import names
from vigil.schema.agents import McpServerSpec, ToolDescriptor

log = logging.getLogger("vigil.tools.mcp")


class McpServerError(RuntimeError):
    """An MCP server cannot be used as configured (listing its tools failed, a tool the
    agent names is missing)."""


def server_key(spec: McpServerSpec, agent: str = "") -> str:
    """What makes two specs the same server process / connection: the same server for
    the same ``agent`` (whose calls it serves). Two agents naming one server
    never share its process: what one agent's calls leave in it (its state, the stderr
    a failed call quotes) would reach the other's transcript."""
    ident = {
        "command": spec.command,
        "url": spec.url,
        "cred": spec.credential,
        "env": spec.env,
        "agent": agent,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _listing_error(exc: Exception) -> str:
    """What went wrong listing a server's tools, in one line: a listing that is not what
    the protocol says is named by its first fault (where, and what)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "(the result)"
        return f"its listing is not what MCP says: {where}: {first.get('msg')}"
    return error_text(exc)


def mcp_tool_name(descriptor: ToolDescriptor) -> str:
    """The server's own name of a catalog tool ``server.tool``."""
    prefix = f"{descriptor.server}."
    return descriptor.name[len(prefix) :] if descriptor.name.startswith(prefix) else descriptor.name


def describe_mcp_tools(
    spec: McpServerSpec, tools: Sequence[mcp_types.Tool]
) -> list[ToolDescriptor]:
    """Catalog entries ``server.tool`` of a server's listed tools (those the spec allows).

    A tool the server marks read-only has no effects; any other reaches outside vigil and
    so needs approval by default (``approval`` in the agent file changes that).
    """
    listed = {t.name: t for t in tools}
    if spec.tools is not None:
        missing = [name for name in spec.tools if name not in listed]
        if missing:
            raise McpServerError(
                f"MCP server {spec.name} has no tool {', '.join(missing)}; "
                f"it offers {', '.join(sorted(listed)) or 'none'}"
            )
    wanted = listed if spec.tools is None else {n: listed[n] for n in spec.tools}
    out = []
    for name, t in wanted.items():
        read_only = t.annotations is not None and t.annotations.read_only_hint is True
        out.append(
            ToolDescriptor(
                name=f"{spec.name}.{name}",
                kind="mcp",
                description=t.description or t.title or "",
                parameters=dict(t.input_schema),
                effects="none" if read_only else "external",
                approval=spec.approval,
                timeout_seconds=spec.timeout_seconds,
                server=spec.name,
            )
        )
    return out


def render_call_result(result: mcp_types.CallToolResult) -> ToolOutcome:
    """The text the model reads: text blocks as they are, other blocks named."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            kind = "image" if isinstance(block, mcp_types.ImageContent) else "audio"
            parts.append(f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            res = block.resource
            if isinstance(res, mcp_types.TextResourceContents):
                parts.append(res.text)
            else:
                parts.append(f"[resource {res.uri}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource link {block.uri}]")
    structured = result.structured_content
    text = "\n".join(parts)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, default=str)
    data = None
    if isinstance(structured, dict) and len(json.dumps(structured, default=str)) <= DATA_LIMIT:
        data = dict(structured)
    return ToolOutcome(text, data)


IDLE_SECONDS: float | None = None
"""How long a server may go without a call before the worker stops it (started again on
its next call); None: never (the default: a server may hold state a session waiting on a
person for hours comes back to)."""
MAX_SERVERS = 64
"""The most servers a worker keeps running: one per agent and server, so a worker serving
many agents stops the least recently used idle one before it starts another."""


class McpServers:
    """The worker's MCP connections: started lazily, reused, restarted, closed with it.

    A server with no call for ``idle_seconds`` is stopped (None: never), and past
    ``max_servers`` the least recently used one without a call running is stopped before
    another starts; either is started again on its next call. A server is in use from the
    moment a call or a listing asks for it until that ends, and is never stopped then (the
    cap is passed rather than a call cut)."""

    def __init__(
        self,
        resolve_credential: McpCredentials = env_credential,
        *,
        errlog: TextIO | None = None,
        start_timeout: float = START_TIMEOUT_SECONDS,
        idle_seconds: float | None = IDLE_SECONDS,
        max_servers: int = MAX_SERVERS,
    ) -> None:
        self._resolve = resolve_credential
        self._errlog = errlog or sys.stderr
        self._start_timeout = start_timeout
        self._idle_seconds = idle_seconds or None
        self._max_servers = max(1, max_servers)
        self._connections: dict[str, McpConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        """Calls and listings under way, by server key: a server in use is never stopped."""
        self._used: dict[str, float] = {}
        """When each server was last asked for or let go (the loop's clock), by key."""
        self._stopping: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.contextmanager
    def _using(self, key: str) -> Iterator[None]:
        """``key``'s server in use for the block (not stopped meanwhile)."""
        self._users[key] = self._users.get(key, 0) + 1
        self._used[key] = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            left = self._users[key] - 1
            if left:
                self._users[key] = left
            else:
                del self._users[key]
            if key in self._connections or left:
                self._used[key] = asyncio.get_running_loop().time()
            else:  # it never started, or was stopped: nothing to keep a time for
                self._used.pop(key, None)

    def _stop_unused(self, *, starting_one: bool = False) -> None:
        """Stop the servers idle past their time and, when one more is about to start
        (``starting_one``), the least recently used idle ones past the cap. Synchronous up
        to the stops themselves, which run in the background."""
        now = asyncio.get_running_loop().time()
        idle = sorted(
            (key for key in self._connections if key not in self._users),
            key=lambda key: self._used.get(key, 0.0),
        )
        stop = [
            key
            for key in idle
            if self._idle_seconds is not None
            and now - self._used.get(key, now) >= self._idle_seconds
        ]
        if starting_one:
            over = len(self._connections) - len(stop) + 1 - self._max_servers
            stop += [key for key in idle if key not in stop][: max(0, over)]
        for key in stop:
            conn = self._connections.pop(key)
            self._used.pop(key, None)
            log.info("MCP server %s (agent %s) stopped: not in use", conn.spec.name, conn.agent)
            task = asyncio.create_task(conn.close(), name=f"mcp-stop:{conn.spec.name}")
            self._stopping.add(task)
            task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.info("stopping an MCP server failed: %s", error_text(exc))

    async def _sweep(self) -> None:
        """Stop idle servers while the worker runs (also when no call comes)."""
        assert self._idle_seconds is not None
        while True:
            await asyncio.sleep(min(self._idle_seconds / 2, 30.0))
            self._stop_unused()

    async def connection(self, spec: McpServerSpec, agent: str = "") -> McpConnection:
        """The live connection to ``spec``'s server for ``agent``, started
        (again) when there is none."""
        if self._closed:
            raise ToolFailed("this worker is shutting down")
        key = server_key(spec, agent)
        async with self._locks.setdefault(key, asyncio.Lock()):
            conn = self._connections.get(key)
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                log.warning("MCP server %s is gone; starting it again", spec.name)
                self._connections.pop(key, None)
                await conn.close()
            self._stop_unused(starting_one=True)
            if self._idle_seconds is not None and self._sweeper is None:
                self._sweeper = asyncio.create_task(self._sweep(), name="mcp-idle-sweep")
            conn = McpConnection(spec, self._resolve, self._errlog, agent=agent)
            await conn.open(self._start_limit(spec))
            self._connections[key] = conn
            return conn

    def _start_limit(self, spec: McpServerSpec) -> float:
        """How long ``spec``'s server may take to start or list its tools: the worker's
        limit, or the server's own ``timeout_seconds`` when that is longer."""
        return max(self._start_timeout, spec.timeout_seconds or 0.0)

    def is_running(self, spec: McpServerSpec, agent: str = "") -> bool:
        """Whether a live connection to ``spec``'s server for ``agent`` is open."""
        conn = self._connections.get(server_key(spec, agent))
        return conn is not None and conn.alive

    async def _reset(self, conn: McpConnection) -> None:
        key = server_key(conn.spec, conn.agent)
        if self._connections.get(key) is conn:
            del self._connections[key]
        await conn.close()

    async def list_tools(self, spec: McpServerSpec, agent: str = "") -> list[ToolDescriptor]:
        with self._using(server_key(spec, agent)):
            conn = await self.connection(spec, agent)
            try:
                async with asyncio.timeout(self._start_limit(spec)):
                    listed = await conn.list_tools()
            except (TimeoutError, MCPError, OSError, ValidationError) as exc:
                # ValidationError: a listing that is not what the protocol says.
                await self._reset(conn)
                raise McpServerError(
                    f"MCP server {spec.name}: listing tools failed: {_listing_error(exc)}"
                ) from None
        return describe_mcp_tools(spec, listed)

    async def _listed(self, conn: McpConnection, *, again: bool = False) -> frozenset[str]:
        """The names ``conn``'s server lists (asked once a connection, or ``again``)."""
        if conn.listed is None or again:
            try:
                async with asyncio.timeout(self._start_limit(conn.spec)):
                    conn.listed = frozenset(t.name for t in await conn.list_tools())
            except (TimeoutError, MCPError, OSError, ValidationError) as exc:
                await self._reset(conn)
                raise ToolFailed(
                    f"MCP server {conn.spec.name}: listing tools failed: {_listing_error(exc)}"
                ) from None
        return conn.listed

    async def _serving(self, spec: McpServerSpec, tool: str, agent: str) -> McpConnection:
        """A connection whose server lists ``tool``. A session's pinned catalog may name a
        tool its server gained after this worker started it (the server's code changed,
        then ``vigil agent apply --refresh`` listed it in a new version): the server is
        asked again, and a stdio server that still does not list it is started again,
        once for that tool, once the calls running on it have ended."""
        conn = await self.connection(spec, agent)
        if tool in await self._listed(conn):
            return conn
        if tool in await self._listed(conn, again=True):
            return conn
        if spec.command and conn.started_for != tool:
            limit = self._start_limit(spec)
            try:
                # Not while a call runs on it: started again once they have ended.
                async with asyncio.timeout(limit):
                    while conn.calls:
                        await conn.idle.wait()
            except TimeoutError:
                raise ToolFailed(
                    f"MCP server {spec.name} does not list {tool!r}, and the calls running "
                    f"on it did not end within {limit:g}s for it to be started again"
                ) from None
            log.info("MCP server %s does not list %s; starting it again", spec.name, tool)
            await self._reset(conn)
            conn = await self.connection(spec, agent)  # within its own start limit
            conn.started_for = tool
            if tool in await self._listed(conn):  # within its own limit
                return conn
        shown = ", ".join(sorted(conn.listed or ())) or "none"
        raise ToolFailed(f"MCP server {spec.name} has no tool {tool!r} (it lists: {shown})")

    async def call(
        self,
        spec: McpServerSpec,
        tool: str,
        arguments: dict[str, Any],
        *,
        timeout: float,  # noqa: ASYNC109 - the tool's own limit, reported to the model
        idempotency_key: str | None = None,
        agent: str = "",
    ) -> ToolOutcome:
        """Call ``tool`` on ``agent``'s connection to the server; its result,
        or ToolFailed with what went wrong.

        ``idempotency_key`` travels in the request's ``_meta`` (``vigil/idempotency-key``)
        so a server can make an external effect happen once across retries.
        """
        with self._using(server_key(spec, agent)):
            return await self._call(spec, tool, arguments, timeout, idempotency_key, agent)

    async def _call(
        self,
        spec: McpServerSpec,
        tool: str,
        arguments: dict[str, Any],
        timeout: float,  # noqa: ASYNC109 - the tool's own limit
        idempotency_key: str | None,
        agent: str,
    ) -> ToolOutcome:
        meta = {names.MCP_META_IDEMPOTENCY_KEY: idempotency_key} if idempotency_key else None
        serving = self._connections.get(server_key(spec, agent))
        conn = await self._serving(spec, tool, agent)
        label = f"{spec.name}.{tool}"
        conn.calls += 1
        conn.idle.clear()
        noise = conn.stdout_lines  # what it writes to stdout during the call is told
        # And to stderr: what it wrote before may be another session's (all it wrote
        # when it was started for this call is this call's).
        said_before = conn.stderr_mark if conn is serving else 0
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await conn.call(tool, arguments, meta)
        except TimeoutError:
            if not deadline.expired():
                await self._reset(conn)
                raise ToolFailed(f"MCP tool {label} failed: TimeoutError") from None
            await self._reset(conn)
            raise ToolFailed(
                f"MCP tool {label} timed out after {timeout:g}s; the server connection was reset"
                f"{conn.stdout_said(noise)}"
            ) from None
        except MCPError as exc:
            # The SDK's "connection closed" shares its code (-32000) with errors a server
            # may answer itself: a stdio server went away only when its stream ended. Over
            # HTTP the SDK says it of a stream that failed while the connection stays: the
            # connection is made again.
            if exc.code == mcp_types.CONNECTION_CLOSED and (not conn.alive or spec.url):
                await self._reset(conn)
                again = "started again" if spec.command else "reconnected"
                raise ToolFailed(
                    f"MCP server {spec.name} closed the connection during {tool} (did it crash?); "
                    f"it is {again} on the next call{conn.stdout_said(noise)}"
                    f"{await conn.stderr_said(since=said_before)}"
                ) from None
            raise ToolFailed(
                f"MCP server {spec.name} refused {tool}: {short_text(exc.message)}"
            ) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._reset(conn)
            raise ToolFailed(f"MCP tool {label} failed: {error_text(exc)}") from None
        finally:
            conn.calls -= 1
            if not conn.calls:
                conn.idle.set()
        rendered = render_call_result(result)
        if result.is_error:
            raise ToolFailed(
                f"{label}: {short_text(rendered.text) or 'the tool reported an error'}"
            )
        return rendered

    async def aclose(self) -> None:
        """Stop every server (with the worker)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        conns, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in conns), *self._stopping, return_exceptions=True)


async def list_mcp_tools(
    spec: McpServerSpec,
    resolve_credential: McpCredentials = env_credential,
    *,
    errlog: TextIO | None = None,
    timeout: float = START_TIMEOUT_SECONDS,  # noqa: ASYNC109
) -> list[ToolDescriptor]:
    """Start (or reach) a server once, list its tools as catalog entries, close it.

    For ``vigil agent apply`` / refresh, outside a worker. Raises McpServerError.
    """
    servers = McpServers(resolve_credential, errlog=errlog, start_timeout=timeout)
    try:
        return await servers.list_tools(spec)
    except ToolFailed as exc:
        raise McpServerError(str(exc)) from None
    finally:
        await servers.aclose()
