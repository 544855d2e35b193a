"""One live connection to an MCP server, through the official ``mcp`` SDK.

The SDK's client must be entered and left in one task (anyio task groups), so a
background task owns it while activity tasks send calls over it; the transport's read
stream is watched so a server that went away is noticed before the next call.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO, cast

import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp import types as mcp_types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from vigil.activities.credentials import CredentialError, CredentialResolver
from vigil.activities.tools.registry import ToolFailed
from vigil.schema.agents import McpServerSpec

log = logging.getLogger("vigil.tools.mcp")

McpCredentials = Callable[[str], Awaitable[str]]
"""Credential name -> its value (``activities.credentials.CredentialResolver.resolve``);
raises CredentialError when it cannot be had. The value is never logged."""

START_TIMEOUT_SECONDS = 30.0
"""Starting a server and the MCP handshake."""
CLOSE_TIMEOUT_SECONDS = 10.0
HTTP_TIMEOUT_SECONDS = 30.0
STDERR_TAIL_BYTES = 2048
"""How much of a stdio server's latest stderr is kept to say why it stopped."""
STDERR_SETTLE_SECONDS = 1.0
"""How long a failed start waits for the server's last stderr bytes to arrive."""


async def env_credential(name: str) -> str:
    """The default (no credential store): ``env:NAME`` names an environment variable."""
    return await CredentialResolver(None, None).resolve(name)


# A line a stdio server wrote to stdout that is not a JSON-RPC message reaches the client
# as an error value, which vigil reports in its own words (``McpConnection.stdout_said``,
# one warning line): the SDK's traceback for each such line is left out of the log.
logging.getLogger("mcp.client.stdio").addFilter(
    lambda record: not record.getMessage().startswith("Failed to parse JSONRPC message")
)


def _not_mcp(error: ValueError) -> str:
    """The line a parse error was raised for (pydantic keeps it as the error's input)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        with contextlib.suppress(Exception):
            line = errors()[0].get("input")
            if isinstance(line, str):
                return short_text(line, 200)
    return short_text(str(error), 200)


class _EofWatch:
    """The transport's read stream, noticing its end (the server went away) so the pool
    restarts a server that died between calls instead of failing the next call, and
    telling ``noise`` of each line that was not an MCP message."""

    def __init__(
        self, inner: Any, ended: asyncio.Event, noise: Callable[[str], None] | None
    ) -> None:
        self._inner = inner
        self._ended = ended
        self._noise = noise

    def _seen(self, item: Any) -> Any:
        if self._noise is not None and isinstance(item, ValueError):
            self._noise(_not_mcp(item))
        return item

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return self._seen(await self._inner.receive())
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._ended.set()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _EofWatch:
        return self

    async def __anext__(self) -> Any:
        try:
            return self._seen(await self._inner.__anext__())
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._ended.set()
            raise

    async def __aenter__(self) -> _EofWatch:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self._ended.set()
        return cast("bool | None", await self._inner.__aexit__(*exc))


OWN_PYTHON = frozenset({"python", "python3"})
"""Commands that run the worker's own interpreter (``stdio_command``)."""


def stdio_command(spec: McpServerSpec) -> list[str]:
    """The command a stdio server is started with: its own, except that a bare ``python``
    or ``python3`` is the interpreter this process runs on (the one vigil is installed in,
    with the MCP package), whatever the worker's PATH says, unless the server's ``env``
    sets a PATH of its own to find it on."""
    command = list(spec.command or [])
    if command and command[0] in OWN_PYTHON and "PATH" not in spec.env:
        command[0] = sys.executable
    return command


class _StderrTail(asyncio.Protocol):
    """A stdio server's stderr: passed on to the worker's errlog as it comes, and its last
    bytes kept so a server that stops can say why (a failed start, a crash)."""

    def __init__(self, errlog: TextIO, limit: int = STDERR_TAIL_BYTES) -> None:
        self._errlog = errlog
        self._limit = limit
        self._tail = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.ended = asyncio.Event()
        self.received = 0
        """Bytes the server wrote so far (a call notes it to tell what it wrote after)."""

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self._tail += data
        del self._tail[: -self._limit]
        with contextlib.suppress(Exception):
            self._errlog.write(self._decoder.decode(data))
            self._errlog.flush()

    def eof_received(self) -> bool | None:
        self.ended.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended.set()

    def text(self, since: int | None = None) -> str:
        """The kept tail, decoded; a cut first line is dropped. ``since``: only what was
        written after ``received`` was that (a call's own lines, not what the server
        wrote for an earlier call, perhaps another session's)."""
        tail = bytes(self._tail)
        if since is not None:
            after = max(0, self.received - since)
            tail = tail[len(tail) - min(after, len(tail)) :]
        text = tail.decode("utf-8", errors="replace")
        if len(tail) >= self._limit and "\n" in text:
            text = text.split("\n", 1)[1]
        return text.strip()


class McpConnection:
    """One live MCP client. The SDK's client must be entered and left in one task, so a
    background task owns it; calls from activity tasks use it while it lives."""

    def __init__(
        self,
        spec: McpServerSpec,
        resolve_credential: McpCredentials,
        errlog: TextIO,
        *,
        agent: str = "",
    ) -> None:
        self.spec = spec
        self.agent = agent
        """The agent whose calls this connection serves (McpServers keeps one an agent)."""
        self._resolve = resolve_credential
        self._errlog = errlog
        self._ended = asyncio.Event()
        self._stop = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None
        self._client: Client | None = None
        self._stderr: _StderrTail | None = None
        """A stdio server's stderr, once its process was spawned."""
        self._stderr_pipe: asyncio.ReadTransport | None = None
        self.stdout_lines = 0
        """How many lines the server wrote to stdout that were not MCP messages
        (``stdout_said``'s ``since``)."""
        self._first_not_mcp = self._last_not_mcp = ""
        self.listed: frozenset[str] | None = None
        """The tool names this server listed, once a call asked (McpServers.call)."""
        self.calls = 0
        self.idle = asyncio.Event()
        """Set while no call runs on the connection (``calls`` is 0)."""
        self.idle.set()
        """Calls in flight on this connection (a restart waits for none)."""
        self.started_for: str | None = None
        """The tool whose absence started this server again (it is not started again
        for the same tool)."""

    @property
    def alive(self) -> bool:
        return (
            self._client is not None
            and self._owner is not None
            and not self._owner.done()
            and not self._ended.is_set()
        )

    async def open(self, timeout: float = START_TIMEOUT_SECONDS) -> None:  # noqa: ASYNC109
        transport = await self._transport()
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._own(transport, ready), name=f"mcp:{self.spec.name}")
        try:
            async with asyncio.timeout(timeout):
                self._client = await asyncio.shield(ready)
        except TimeoutError:
            # The handshake never finished: nothing to leave gracefully, so the server is
            # stopped at once (it waited for the close's own 10 s before).
            self._owner.cancel()
            await self.close()
            raise ToolFailed(
                f"MCP server {self.spec.name} did not start within {timeout:g}s"
                f"{self.stdout_said()}{await self.stderr_said()}"
            ) from None
        except ToolFailed:
            raise
        except asyncio.CancelledError:
            await self.close()  # a start cut short leaves no server behind
            raise
        except Exception as exc:
            await self.close()
            raise ToolFailed(
                f"MCP server {self.spec.name} could not start: {error_text(exc)}"
                f"{self.stdout_said()}{await self.stderr_said()}"
            ) from None

    def stdout_said(self, since: int | None = None) -> str:
        """``; it wrote to stdout what is not an MCP message ...``: the first such line
        (``since`` None: at its start), or the latest one when it wrote some after
        ``stdout_lines`` was ``since`` (during a call); nothing otherwise."""
        if self.stdout_lines <= (since or 0):
            return ""
        line = self._first_not_mcp if since is None else self._last_not_mcp
        return (
            f"; it wrote to stdout what is not an MCP message: {line!r} (a stdio "
            "server writes only protocol messages to stdout; its logs go to stderr)"
        )

    def _noise(self, line: str) -> None:
        self.stdout_lines += 1
        self._last_not_mcp = line
        if self.stdout_lines == 1:  # once a server: its errors quote what comes later
            self._first_not_mcp = line
            log.warning(
                "MCP server %s wrote to stdout what is not an MCP message: %r",
                self.spec.name,
                line,
            )

    @property
    def stderr_mark(self) -> int | None:
        """Where the server's stderr stands now (``stderr_said(since=...)``)."""
        return None if self._stderr is None else self._stderr.received

    async def stderr_said(self, since: int | None = None) -> str:
        """``; its stderr ends: ...`` with the last lines a stdio server wrote (once it
        has stopped), or nothing for a server over HTTP or one that was never spawned.
        ``since`` (a ``stderr_mark``): only the lines written after it."""
        tail = self._stderr
        if tail is None:
            return ""
        await self._close_stderr()
        text = tail.text(since)
        during = "" if since is None else " during the call"
        if not text:
            return f"; it wrote nothing to stderr{during}"
        return f"; its stderr{during} ends: {text}"

    async def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        spec = self.spec
        if spec.command:
            command = stdio_command(spec)
            params = StdioServerParameters(
                command=command[0], args=command[1:], env=dict(spec.env) or None
            )
            return self._stdio(params)
        if spec.url:
            headers: dict[str, str] = {}
            if spec.credential:
                try:
                    token = await self._resolve(spec.credential)
                except CredentialError as exc:
                    raise ToolFailed(f"MCP server {spec.name}: {exc}") from None
                headers["Authorization"] = f"Bearer {token}"
            return self._http(spec.url, headers)
        raise ToolFailed(f"MCP server {spec.name} has neither a command nor a url")

    @contextlib.asynccontextmanager
    async def _stdio(self, params: StdioServerParameters) -> AsyncIterator[Any]:
        """The SDK's stdio transport with the server's stderr on a pipe of ours (kept
        and passed on to the worker's errlog)."""
        read_fd, write_fd = os.pipe()
        tail = _StderrTail(self._errlog)
        read_end = os.fdopen(read_fd, "rb", buffering=0)  # the transport closes it
        pipe, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: tail, read_end)
        self._stderr_pipe = pipe
        write_end = os.fdopen(write_fd, "w")
        try:
            watched = self._watched(stdio_client(params, errlog=write_end), self._noise)
            async with watched as streams:
                # The server holds its own copy now; ours would keep the pipe from ending.
                write_end.close()
                self._stderr = tail
                yield streams
        finally:
            write_end.close()

    @contextlib.asynccontextmanager
    async def _http(self, url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
        timeout = httpx2.Timeout(HTTP_TIMEOUT_SECONDS, read=300.0)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
            self._watched(streamable_http_client(url, http_client=http)) as streams,
        ):
            yield streams

    @contextlib.asynccontextmanager
    async def _watched(
        self,
        inner: contextlib.AbstractAsyncContextManager[Any],
        noise: Callable[[str], None] | None = None,
    ) -> AsyncIterator[Any]:
        """The transport's streams, its read end watched; ``noise`` hears what a stdio
        server wrote to stdout that is not a message (over HTTP a bad message is the
        server's answer, not stray output, and is left to the SDK)."""
        async with inner as (read, write):
            yield _EofWatch(read, self._ended, noise), write

    async def _own(
        self, transport: contextlib.AbstractAsyncContextManager[Any], ready: asyncio.Future[Client]
    ) -> None:
        info = mcp_types.Implementation(name="vigil", version="0.1.0")
        try:
            async with Client(cast(Any, transport), cache=None, client_info=info) as client:
                ready.set_result(client)
                await self._stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            else:
                log.info("MCP server %s connection ended: %s", self.spec.name, error_text(exc))
        finally:
            self._ended.set()

    async def list_tools(self) -> list[mcp_types.Tool]:
        client = self._require()
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> mcp_types.CallToolResult:
        params_meta = cast("mcp_types.RequestParamsMeta", meta) if meta else None
        return await self._require().call_tool(tool, arguments, meta=params_meta)

    def _require(self) -> Client:
        if self._client is None or not self.alive:
            raise MCPError(code=mcp_types.CONNECTION_CLOSED, message="Connection closed")
        return self._client

    async def close(self) -> None:
        """Leave the client in its own task (a stdio server is stopped, bounded in time)."""
        self._stop.set()
        try:
            await self._leave()
        finally:
            await self._close_stderr()

    async def _leave(self) -> None:
        owner = self._owner
        if owner is None or owner.done():
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await asyncio.shield(owner)
        except TimeoutError:
            owner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await owner
        except asyncio.CancelledError:
            # The owner was cancelled (a start that timed out), not this task: it is left.
            current = asyncio.current_task()
            if not owner.cancelled() or (current is not None and current.cancelling()):
                raise
        except Exception as exc:
            log.info("MCP server %s closed with %s", self.spec.name, error_text(exc))

    async def _close_stderr(self) -> None:
        """Read what the stopped server wrote last (bounded: a child it left may hold the
        pipe open), then close our end."""
        pipe, tail = self._stderr_pipe, self._stderr
        if pipe is None or pipe.is_closing():
            return
        if tail is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STDERR_SETTLE_SECONDS):
                    await tail.ended.wait()
        pipe.close()


def short_text(text: str, limit: int = 1000) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return error_text(exc.exceptions[0])
    detail = str(exc)
    return (
        f"{exc.__class__.__name__}: {short_text(detail, 300)}" if detail else exc.__class__.__name__
    )
