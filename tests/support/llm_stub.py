"""A real local HTTP server that speaks the LLM providers' protocols, for tests and benches.

One server answers both OpenAI chat completions (``POST /v1/chat/completions``) and
Anthropic Messages (``POST /v1/messages``). What it answers is programmed with ``Reply``
values: a queue of planned replies first, then ``stub.default`` (a callable from the
request JSON to a Reply; answers "ok" unless replaced). Each Reply is rendered in the
protocol of the request that receives it::

    with LLMStub() as stub:
        stub.enqueue(Reply.tool_call("search", {"q": "x"}), Reply.status(429, retry_after=1))
        provider = OpenAIChatProvider(stub.url_openai, "gpt-4o", "sk-test", 5.0)
        ...
        assert stub.requests[0].body["tools"]

The server is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1, port 0 (a free port), in a
background thread. It keeps connections alive and logs nothing, so with the default zero
latency it is cheap enough for benchmarks (pass ``record=False`` to keep memory flat).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

WireProtocol = Literal["openai", "anthropic", "unknown"]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass(frozen=True)
class PlannedCall:
    """One tool call the stub will claim the model made."""

    name: str
    arguments: str
    """Raw JSON text, sent verbatim (OpenAI) or as the parsed ``input`` (Anthropic; a
    string that is not JSON is sent as a string ``input``, which the real API never does,
    so the client's pass-through of malformed arguments can be tested on both)."""


@dataclass(frozen=True)
class Reply:
    """One planned answer. Build it with the class methods."""

    kind: Literal["message", "status", "hang", "garbage", "json", "raw"]
    content: str = ""
    calls: tuple[PlannedCall, ...] = ()
    code: int = 200
    message: str | None = None
    retry_after: float | str | None = None
    seconds: float = 0.0
    then: Reply | None = None
    body: Any = None
    usage: tuple[int, int] | None = None
    """(input tokens, output tokens); estimated from the sizes when None."""
    chunk_delay: float = 0.0
    """When the request asked to stream: seconds between streamed chunks."""
    fault_after: int | None = None
    """When streaming: break the stream after this many text chunks (see ``fault``)."""
    fault: Literal["drop", "error", "garbage"] = "drop"
    """``drop``: close the connection without the stream's end; ``error``: send the
    protocol's in-stream error event (OpenAI ``{"error"}``, Anthropic ``event: error``);
    ``garbage``: send one chunk whose data is not JSON, then the rest of the stream."""

    @classmethod
    def text(
        cls, content: str, *, usage: tuple[int, int] | None = None, chunk_delay: float = 0.0
    ) -> Reply:
        """A final text answer (streamed word by word when the request asks to stream)."""
        return cls("message", content=content, usage=usage, chunk_delay=chunk_delay)

    @classmethod
    def broken_stream(
        cls,
        content: str,
        *,
        after: int,
        fault: Literal["drop", "error", "garbage"] = "drop",
        chunk_delay: float = 0.0,
        message: str | None = None,
    ) -> Reply:
        """A text answer whose stream breaks after ``after`` chunks (a non-streaming
        request gets a 500 instead: the fault is the point of this reply). With
        ``garbage`` the stream carries a chunk that is not JSON there, then goes on to
        its proper end. ``message``: the in-stream error's text (``error``)."""
        return cls(
            "message",
            content=content,
            fault_after=after,
            fault=fault,
            chunk_delay=chunk_delay,
            message=message,
        )

    @classmethod
    def tool_call(
        cls,
        name: str,
        args: Mapping[str, Any],
        *,
        content: str = "",
        usage: tuple[int, int] | None = None,
    ) -> Reply:
        """One tool call with well-formed JSON arguments."""
        return cls.tool_calls((name, args), content=content, usage=usage)

    @classmethod
    def tool_call_raw(
        cls, name: str, raw_arguments: str, *, usage: tuple[int, int] | None = None
    ) -> Reply:
        """One tool call whose arguments text is sent exactly as given (may be malformed)."""
        return cls("message", calls=(PlannedCall(name, raw_arguments),), usage=usage)

    @classmethod
    def tool_calls(
        cls,
        *calls: tuple[str, Mapping[str, Any] | str],
        content: str = "",
        usage: tuple[int, int] | None = None,
    ) -> Reply:
        """Several tool calls in one turn; arguments as a mapping or raw text."""
        planned = tuple(
            PlannedCall(name, args if isinstance(args, str) else json.dumps(dict(args)))
            for name, args in calls
        )
        return cls("message", content=content, calls=planned, usage=usage)

    @classmethod
    def status(
        cls, code: int, *, retry_after: float | str | None = None, message: str | None = None
    ) -> Reply:
        """An error status with the protocol's error body; ``retry_after`` as seconds or
        an HTTP-date string becomes the Retry-After header."""
        return cls("status", code=code, retry_after=retry_after, message=message)

    @classmethod
    def hang(cls, seconds: float, then: Reply | None = None) -> Reply:
        """Wait before answering (``then``, else "ok"), so a client with a shorter timeout
        gives up. Stopping the stub cuts the wait short."""
        return cls("hang", seconds=seconds, then=then)

    @classmethod
    def garbage(cls) -> Reply:
        """200 with a body that is not JSON."""
        return cls("garbage")

    @classmethod
    def json_body(cls, body: Any, *, code: int = 200) -> Reply:
        """Any JSON body, sent as is whatever the protocol (e.g. a 200 lacking structure)."""
        return cls("json", body=body, code=code)

    @classmethod
    def raw(cls, body: bytes, *, code: int = 200) -> Reply:
        """These exact bytes as an ``application/json`` body (e.g. JSON nested deeper
        than any encoder here would write it)."""
        return cls("raw", body=body, code=code)

    @classmethod
    def raw_stream(cls, body: bytes) -> Reply:
        """These exact bytes as a ``text/event-stream`` body (a stream no encoder here
        would write: one endless line, an event of many data lines)."""
        return cls("raw", body=body, message="text/event-stream")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub received."""

    path: str
    protocol: WireProtocol
    headers: dict[str, str]
    """Header names in lowercase."""
    body: Any
    """The parsed JSON body, or None when it was not JSON."""
    raw: bytes = field(repr=False)
    peer: tuple[str, int] = ("", 0)
    """The client's address and port: requests on one kept-alive connection share it."""


def answer_ok(request: Any) -> Reply:
    """The default responder."""
    return Reply.text("ok")


class LLMStub:
    """The stub server. Use as a context manager or with ``start()`` / ``stop()``."""

    def __init__(
        self, *, latency: float = 0.0, record: bool = True, host: str = "127.0.0.1"
    ) -> None:
        self.latency = latency
        """Seconds added before every answer (0: answer at once, for benchmarks)."""
        self.record = record
        self.host = host
        self.default: Callable[[Any], Reply] = answer_ok
        self.on_get: Callable[[str], None] | None = None
        """Called with the path of each GET (which answers 404 "no route"): lets a test act
        while a tool is fetching, e.g. stop a part of the stack."""
        self.errors: list[str] = []
        """Exceptions raised inside the server while handling requests (should stay empty)."""
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._served = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LLMStub:
        if self._server is not None:
            raise RuntimeError("LLMStub is already running")
        self._stopping.clear()
        server = _Server((self.host, 0), _Handler, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"llm-stub-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes any hanging handler
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # Idle keep-alive handlers are blocked reading; this releases them.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LLMStub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LLMStub is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def host_port(self) -> str:
        """The stub as a VIGIL_HTTP_ALLOW entry (http_fetch of the stub's pages)."""
        return f"{self.host}:{self.port}"

    @property
    def url_openai(self) -> str:
        """Base URL for an OpenAI-compatible client (``.../v1``)."""
        return f"{self.url}/v1"

    @property
    def url_anthropic(self) -> str:
        """Base URL for an Anthropic client (the host; the client adds ``/v1/messages``)."""
        return self.url

    def slow_page(self, path: str, seconds: float) -> tuple[list[str], threading.Event]:
        """GET ``path`` takes ``seconds`` (http_fetch of it is a slow call): the paths
        fetched, in order, and an event set once ``path`` is being fetched."""
        fetched: list[str] = []
        loading = threading.Event()

        def on_get(got: str) -> None:
            fetched.append(got)
            if got == path:
                loading.set()
                time.sleep(seconds)

        self.on_get = on_get
        return fetched, loading

    # -- programming and inspection ------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Plan the next answers, in order; after them ``default`` answers."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Planned replies not yet served."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (when ``record`` is on)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests, planned replies and errors."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()
            self.errors.clear()

    # -- used by the handler -------------------------------------------------------------

    def _take(self, request: RecordedRequest) -> tuple[int, Reply]:
        with self._lock:
            if self.record:
                self._requests.append(request)
            number = next(self._served)
            planned = self._queue.popleft() if self._queue else None
        if planned is None:
            # Outside the lock: the default may be slow or inspect ``requests``.
            planned = self.default(request.body)
        return number, planned


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        stub: LLMStub,
    ) -> None:
        self.stub = stub
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Quiet: a client that gave up (timeout test) is expected. Anything else is kept
        # for the test to inspect instead of being printed.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            with self.stub._lock:
                self.stub.errors.append(repr(exc))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so benchmarks reuse connections
    timeout = 60  # idle keep-alive connections do not hold a thread forever
    # Headers and body go out in two writes; with Nagle on, the second one waits for the
    # client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None  # no per-request stderr logging

    def setup(self) -> None:
        super().setup()
        with self.server.stub._lock:
            self.server.stub._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.stub._lock:
            self.server.stub._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        hook = self.server.stub.on_get
        if hook is not None:
            hook(self.path)
        self._send(404, _json_bytes({"error": {"message": f"no route for GET {self.path}"}}))

    def do_POST(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            body = None
        path = self.path.split("?", 1)[0]
        protocol: WireProtocol = (
            "openai"
            if path == OPENAI_PATH
            else "anthropic"
            if path == ANTHROPIC_PATH
            else "unknown"
        )
        if protocol == "unknown":
            self._send(404, _json_bytes({"error": {"message": f"no route for POST {path}"}}))
            return
        bad = _bad_tool_name(body, protocol)
        if bad is not None:
            # As the real APIs do: a tool name outside ^[a-zA-Z0-9_-]{1,64}$ is refused.
            message = f"Invalid tool name {bad!r}: must match ^[a-zA-Z0-9_-]{{1,64}}$"
            self._send_error(Reply("status", code=400, message=message), protocol)
            return
        request = RecordedRequest(
            path=path,
            protocol=protocol,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
            peer=(str(self.client_address[0]), int(self.client_address[1])),
        )
        number, reply = stub._take(request)
        if stub.latency > 0 and stub._stopping.wait(stub.latency):
            self.close_connection = True
            return
        while reply.kind == "hang":
            if stub._stopping.wait(reply.seconds):
                self.close_connection = True
                return
            reply = reply.then or Reply.text("ok")
        self._render(reply, protocol, body if isinstance(body, dict) else {}, number)

    def _render(
        self, reply: Reply, protocol: WireProtocol, request: dict[str, Any], n: int
    ) -> None:
        if reply.kind == "garbage":
            self._send(200, b"<html><body>502 upstream hiccup", "text/html")
        elif reply.kind == "json":
            self._send(reply.code, _json_bytes(reply.body))
        elif reply.kind == "raw":
            self._send(reply.code, bytes(reply.body), reply.message or "application/json")
        elif reply.kind == "status":
            self._send_error(reply, protocol)
        elif request.get("stream") is True:
            self._stream(reply, protocol, request, n)
        elif reply.fault_after is not None:
            self._send_error(Reply("status", code=500), protocol)
        elif protocol == "openai":
            self._send(200, _json_bytes(_openai_message(reply, request, n)))
        else:
            self._send(200, _json_bytes(_anthropic_message(reply, request, n)))

    def _stream(
        self, reply: Reply, protocol: WireProtocol, request: dict[str, Any], n: int
    ) -> None:
        """The reply as the provider streams it: Server-Sent Events in chunked transfer
        encoding on a connection kept alive for the next request. A reply planned to break
        (``fault_after``) goes out close-delimited instead (no length, ``Connection:
        close``), so its break is an early end of the body, as a dropped stream reads."""
        render = _openai_stream if protocol == "openai" else _anthropic_stream
        stopping = self.server.stub._stopping
        # The connection is kept only when the client asked for it (HTTP/1.1, no close).
        keep = not self.close_connection and self.request_version == "HTTP/1.1"
        chunked = keep and reply.fault_after is None
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            for item in render(reply, request, n):
                if item is _PAUSE:
                    if reply.chunk_delay > 0 and stopping.wait(reply.chunk_delay):
                        return
                    continue
                if item is _DROP:
                    return
                data = bytes(item)  # type: ignore[call-overload]
                if not data:
                    continue  # an empty chunk would end a chunked body
                if chunked:
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                self.wfile.write(data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                self.close_connection = False
        except OSError:
            return

    def _send_error(self, reply: Reply, protocol: WireProtocol) -> None:
        code = reply.code
        error_type = _ERROR_TYPES.get(code, "api_error" if code >= 500 else "invalid_request_error")
        message = reply.message or _default_message(code)
        if protocol == "anthropic":
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": error_type, "message": message},
            }
        else:
            payload = {
                "error": {"message": message, "type": error_type, "param": None, "code": None}
            }
        headers: dict[str, str] = {}
        if reply.retry_after is not None:
            value = reply.retry_after
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            headers["Retry-After"] = str(value)
        self._send(code, _json_bytes(payload), extra=headers)

    def _send(
        self,
        code: int,
        payload: bytes,
        content_type: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            # The client gave up (a timeout test) or the stub is stopping.
            self.close_connection = True


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _default_message(code: int) -> str:
    if code == 529:
        return "Overloaded"
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return f"HTTP {code}"


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _bad_tool_name(body: Any, protocol: WireProtocol) -> str | None:
    """The first tool name (offered, or called in the conversation) the API would refuse."""
    if not isinstance(body, dict):
        return None
    found: list[Any] = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            fn = tool.get("function") if protocol == "openai" else tool
            found.append(fn.get("name") if isinstance(fn, dict) else None)
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        for call in message.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            found.append(fn.get("name") if isinstance(fn, dict) else None)
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                found.append(block.get("name"))
    return next((n for n in found if isinstance(n, str) and not _TOOL_NAME.match(n)), None)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def _estimated_usage(reply: Reply, request: dict[str, Any]) -> tuple[int, int]:
    if reply.usage is not None:
        return reply.usage
    prompt = len(json.dumps(request.get("messages", []))) // 4 + 1
    completion = (len(reply.content) + sum(len(c.arguments) for c in reply.calls)) // 4 + 1
    return prompt, completion


def _openai_message(reply: Reply, request: dict[str, Any], n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.calls:
        message["content"] = reply.content or None
        message["tool_calls"] = [
            {
                "id": f"call_stub{n}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for i, c in enumerate(reply.calls)
        ]
    prompt, completion = _estimated_usage(reply, request)
    return {
        "id": f"chatcmpl-stub{n}",
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": request.get("model", "stub"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _anthropic_message(reply: Reply, request: dict[str, Any], n: int) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    if reply.content:
        blocks.append({"type": "text", "text": reply.content})
    for i, call in enumerate(reply.calls):
        try:
            tool_input: Any = json.loads(call.arguments)
        except ValueError:
            tool_input = call.arguments
        blocks.append(
            {"type": "tool_use", "id": f"toolu_stub{n}_{i}", "name": call.name, "input": tool_input}
        )
    prompt, completion = _estimated_usage(reply, request)
    return {
        "id": f"msg_stub{n}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "stub"),
        "content": blocks,
        "stop_reason": "tool_use" if reply.calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


# --- streaming ---------------------------------------------------------------------------

_PAUSE = object()
"""Between two chunks: wait ``chunk_delay``."""
_DROP = object()
"""Stop writing and close the connection (a stream broken mid-way)."""


def _pieces(content: str) -> list[str]:
    """Word-sized pieces that concatenate back to ``content``."""
    return re.findall(r"\s*\S+\s*?(?=\s|$)|\s+$", content) or ([content] if content else [])


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _text_stream(reply: Reply, piece_event: Callable[[str], bytes], error: bytes) -> Any:
    """The text pieces with pauses between them, broken where the reply says."""
    for i, piece in enumerate(_pieces(reply.content)):
        if reply.fault == "garbage":
            if i == reply.fault_after:
                yield b'data: {"choices": [{"delta": {"content": "cut\n\n'
            yield piece_event(piece)
            yield _PAUSE
            continue
        if reply.fault_after is not None and i >= reply.fault_after:
            if reply.fault == "error":
                yield error
            yield _DROP
            return
        yield piece_event(piece)
        yield _PAUSE
    if reply.fault_after is not None and reply.fault != "garbage":
        if reply.fault == "error":
            yield error
        yield _DROP


def _openai_stream(reply: Reply, request: dict[str, Any], n: int) -> Any:
    base = {
        "id": f"chatcmpl-stub{n}",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000 + n,
        "model": request.get("model", "stub"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield _sse(chunk({"role": "assistant", "content": ""}))
    said = reply.message or "The server had an error"
    error = _sse({"error": {"message": said, "type": "server_error"}})
    for item in _text_stream(reply, lambda t: _sse(chunk({"content": t})), error):
        yield item
        if item is _DROP:
            return
    for i, call in enumerate(reply.calls):
        head = {"index": i, "id": f"call_stub{n}_{i}", "type": "function"}
        yield _sse(chunk({"tool_calls": [{**head, "function": {"name": call.name}}]}))
        half = len(call.arguments) // 2
        for part in (call.arguments[:half], call.arguments[half:]):
            yield _sse(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    yield _sse(chunk({}, "tool_calls" if reply.calls else "stop"))
    if (request.get("stream_options") or {}).get("include_usage"):
        prompt, completion = _estimated_usage(reply, request)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield _sse({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _anthropic_stream(reply: Reply, request: dict[str, Any], n: int) -> Any:
    prompt, completion = _estimated_usage(reply, request)
    message = {
        "id": f"msg_stub{n}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "stub"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": prompt, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": message}, "message_start")
    yield _sse({"type": "ping"}, "ping")
    index = 0
    if reply.content or reply.fault_after is not None:
        start = {"type": "content_block_start", "index": 0}
        yield _sse({**start, "content_block": {"type": "text", "text": ""}}, start["type"])
        error = _sse(
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": reply.message or "Overloaded"},
            },
            "error",
        )

        def piece(text: str) -> bytes:
            delta = {"type": "text_delta", "text": text}
            return _sse(
                {"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"
            )

        for item in _text_stream(reply, piece, error):
            yield item
            if item is _DROP:
                return
        yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        index = 1
    for number, call in enumerate(reply.calls):
        i = index + number  # the block's index; the id numbers calls as the whole reply does
        block = {
            "type": "tool_use",
            "id": f"toolu_stub{n}_{number}",
            "name": call.name,
            "input": {},
        }
        yield _sse(
            {"type": "content_block_start", "index": i, "content_block": block},
            "content_block_start",
        )
        half = len(call.arguments) // 2
        for part in (call.arguments[:half], call.arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield _sse(
                {"type": "content_block_delta", "index": i, "delta": delta}, "content_block_delta"
            )
        yield _sse({"type": "content_block_stop", "index": i}, "content_block_stop")
    stop = "tool_use" if reply.calls else "end_turn"
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": completion},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


class StubProcess:
    """The stub in a process of its own (``serve``), for benchmarks: its work then takes
    no share of the measured process's interpreter, as an external LLM takes none.
    ``default``: ``module:function`` answering every request. A context manager; the
    process ends when the block does."""

    def __init__(self, default: str | None = None, host: str = "127.0.0.1") -> None:
        self.default = default
        self.host = host
        self._process: Any = None
        self.port = 0

    def __enter__(self) -> StubProcess:
        import subprocess

        command = [sys.executable, "-m", "tests.support.llm_stub"]
        if self.default:
            command += ["--default", self.default]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.strip().isdigit():
            self.__exit__(None, None, None)
            raise RuntimeError(f"the stub process did not start (it printed {line!r})")
        self.port = int(line)
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()
            process.wait()

    @property
    def url_openai(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def serve(argv: list[str] | None = None) -> None:
    """Run the stub in a process of its own (the external LLM, as in production): prints
    its port, then serves until stdin closes. ``--default module:function`` names the
    answer to every request (``answer_ok`` when not given)."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog="python -m tests.support.llm_stub")
    parser.add_argument("--default", help="module:function answering every request")
    args = parser.parse_args(argv)
    stub = LLMStub(record=False).start()
    if args.default:
        module, _, name = args.default.partition(":")
        stub.default = getattr(importlib.import_module(module), name)
    print(stub.port, flush=True)
    try:
        sys.stdin.read()  # the parent's end of the pipe closing ends the stub
    finally:
        stub.stop()


if __name__ == "__main__":
    serve()
