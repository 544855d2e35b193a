"""Provider-neutral model types, the provider error, and the HTTP plumbing providers share.

Every provider speaks these types, so the rest of vigil never sees a vendor's wire format.
Providers never retry: Temporal's retry policy owns retries, and ``ProviderError.retryable``
tells the activity which policy branch applies.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import functools
import hashlib
import itertools
import math
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from vigil.activities.models.http import (
    HttpClient,
    RequestFailed,
    Response,
    UnusableProxy,
    bad_url,
    body_chunks,
    encode_json,
)
from vigil.schema import jsonlimits

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the tool's arguments (an ``object`` schema)."""


@dataclass(frozen=True)
class ToolCall:
    """One tool call requested by the model."""

    id: str
    """The provider's id for the call; a tool result answers it by ``tool_call_id``."""
    name: str
    arguments: str
    """The raw JSON text exactly as the provider sent it. It may be malformed: validating
    it is the tool layer's job, so a bad call goes back to the model as a tool error."""


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, in the provider-neutral shape."""

    role: Role
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    """For ``assistant`` messages: the tool calls the model made in that turn."""
    tool_call_id: str | None = None
    """For ``tool`` messages: the id of the call this message answers."""
    name: str | None = None
    """For ``tool`` messages: the tool's name. Informational; not sent to providers."""


@dataclass(frozen=True)
class Usage:
    """Tokens billed for one model call."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ModelReply:
    """What one model call produced."""

    content: str
    """The text of the reply ("" when the model only called tools)."""
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: str
    """Normalised to OpenAI's vocabulary where a mapping exists: ``stop``, ``tool_calls``,
    ``length``; anything else is passed through as the provider said it."""
    model: str
    """The model that answered, as the provider reported it."""
    latency_ms: float

    def __post_init__(self) -> None:
        # One reply's calls each answered by their own result: a provider that named two
        # alike (the history sent back would pair both results with one call, which a
        # strict provider refuses) has the later ones told apart.
        object.__setattr__(self, "tool_calls", distinct_call_ids(self.tool_calls))


class ProviderError(Exception):
    """A model call failed. ``retryable`` decides whether Temporal should try again."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        """The provider's own error message when it sent one, else our description."""
        self.retryable = retryable
        self.status = status
        """HTTP status, or None when no response arrived (connection error, timeout)."""
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (from Retry-After), if it said."""
        self.error_type = error_type
        """The provider's error type (``rate_limit_error``, ``overloaded_error``...)."""

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}: " if self.status is not None else ""
        return prefix + self.message

    def __repr__(self) -> str:
        return (
            f"ProviderError(message={self.message!r}, retryable={self.retryable}, "
            f"status={self.status}, retry_after={self.retry_after}, "
            f"error_type={self.error_type!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default exception pickling.
        return (
            _rebuild_provider_error,
            (self.message, self.retryable, self.status, self.retry_after, self.error_type),
        )


def _rebuild_provider_error(
    message: str,
    retryable: bool,
    status: int | None,
    retry_after: float | None,
    error_type: str | None,
) -> ProviderError:
    return ProviderError(
        message,
        retryable=retryable,
        status=status,
        retry_after=retry_after,
        error_type=error_type,
    )


class ModelProvider(Protocol):
    """A chat model behind one vendor's API (or the scripted offline model)."""

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply: ...

    async def aclose(self) -> None: ...


DeltaSink = Callable[[str], Awaitable[None]]
"""Receives the reply's text as the model generates it, one delta at a time."""


@runtime_checkable
class StreamingProvider(Protocol):
    """A provider that can also stream: the same reply, its text handed to ``on_delta``
    as it is generated. Concatenated, the deltas equal ``ModelReply.content``."""

    async def stream(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        on_delta: DeltaSink,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply: ...


# ---------------------------------------------------------------------------------------
# Tool names on the wire: OpenAI and Anthropic accept ^[a-zA-Z0-9_-]{1,64}$ only, so the
# ``server.tool`` names of MCP tools travel as ``server__tool`` and come back mapped. A
# name the model once made up (any characters) is sent in the same safe form, so one
# bad call in the history never makes the provider refuse the rest of the session.

_NOT_WIRE = re.compile(r"[^A-Za-z0-9_-]")


@functools.lru_cache(maxsize=4096)
def wire_name(name: str) -> str:
    """A tool's name as the HTTP providers' APIs accept it (dots become ``__``)."""
    return _NOT_WIRE.sub("_", name.replace(".", "__"))[:64] or "_"


def _distinct_wire_name(name: str, taken: set[str]) -> str:
    """A wire name of ``name``'s own, none of ``taken``: its safe form cut short, and a
    digest of the name (of the name and a count, in the unlikely case that is taken)."""
    for n in itertools.count():
        salted = name if n == 0 else f"{name}\x00{n}"
        digest = hashlib.sha256(salted.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        wire = f"{wire_name(name)[:53]}_{digest}"
        if wire not in taken:
            return wire
    raise AssertionError("unreachable")


def _wire_map(tools: list[ToolSpec], messages: list[ChatMessage]) -> dict[str, str]:
    """Each name -> its wire name, no two alike. Two names can meet in ``wire_name``
    (``w.a b`` and ``w.a_b``, ``a.b`` and ``a__b``, long names past 64 characters): the
    catalog's names come first, in their order of name, so a catalog is sent the same way
    on every call; a name that meets one taken gets ``_distinct_wire_name``."""
    called = [c.name for m in messages for c in m.tool_calls]
    names = sorted({t.name for t in tools}) + list(dict.fromkeys(called))
    found: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        if name in found:
            continue
        wire = wire_name(name)
        if wire in taken:
            wire = _distinct_wire_name(name, taken)
        found[name] = wire
        taken.add(wire)
    return found


def to_wire_names(
    messages: list[ChatMessage], tools: list[ToolSpec]
) -> tuple[list[ChatMessage], list[ToolSpec], dict[str, str]]:
    """(messages, tools) with wire names, and the way back: wire name -> catalog name."""
    wire = _wire_map(tools, messages)
    back = {wire[t.name]: t.name for t in tools}
    specs = [t if wire[t.name] == t.name else replace(t, name=wire[t.name]) for t in tools]
    sent = [
        replace(m, tool_calls=[replace(c, name=wire[c.name]) for c in m.tool_calls])
        if any(wire[c.name] != c.name for c in m.tool_calls)
        else m
        for m in messages
    ]
    return sent, specs, back


def from_wire_names(reply: ModelReply, back: dict[str, str]) -> ModelReply:
    """``reply`` with its tool calls named as the catalog names them."""
    if not any(c.name in back for c in reply.tool_calls):
        return reply
    calls = [replace(c, name=back.get(c.name, c.name)) for c in reply.tool_calls]
    return replace(reply, tool_calls=calls)


# ---------------------------------------------------------------------------------------
# Shared HTTP plumbing for the HTTP providers.

MALFORMED = "malformed reply"
MAX_REPLY_BYTES = 32 * 1024 * 1024
"""A provider reply over this size is refused unread (no model answers with so much)."""
MAX_STREAM_BYTES = 16 * MAX_REPLY_BYTES
"""The same bound for a streamed reply, counted on the wire: every token travels in an
event of its own (JSON, ids, framing), often ten times the text it carries. Events are
parsed as they arrive, so this bounds the transfer, not what is held in memory."""
_SNIPPET = 200
MAX_RETRY_AFTER_SECONDS = 3600.0
"""The longest wait a provider's Retry-After is taken for: one asking for more (a year,
or 1e15 seconds, which overflowed the session's timer) is asked again after an hour."""
MAX_TOKEN_COUNT = 2**40
"""The largest token count a reply's usage is taken with; one past it, or below zero, is
no count (0): a negative one lowered the session's totals under its budgets, and one past
2**63 failed the reply's write on every attempt."""


def token_count(value: Any) -> int:
    """A usage field's token count: a whole number in range, else 0 (not reported)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return 0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def is_retryable_status(status: int) -> bool:
    """429 and 5xx (including Anthropic's 529 overloaded) are transient; 408 too."""
    return status in (408, 429) or status >= 500


def redact(text: str, secret: str | None) -> str:
    """Remove a secret from text a provider may have echoed back (some echo the key)."""
    if secret:
        return text.replace(secret, "***")
    return text


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, *, secret: str | None = None
) -> ProviderError:
    """The ProviderError for a non-2xx response.

    Both OpenAI-style ``{"error": {"message", "type"}}`` and Anthropic-style
    ``{"type": "error", "error": {"type", "message"}}`` bodies carry ``error.message``.
    ``headers`` must be case-insensitive (a response's own) or use lowercase keys.
    """
    message: str | None = None
    error_type: str | None = None
    try:
        data = jsonlimits.loads(body)
    except (ValueError, UnicodeDecodeError):  # TooDeep is a ValueError
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            if isinstance(err.get("message"), str):
                message = err["message"]
            if isinstance(err.get("type"), str):
                error_type = err["type"]
        elif isinstance(err, str):
            message = err
        elif isinstance(data.get("message"), str):
            message = data["message"]
    if message is None:
        snippet = body[:_SNIPPET].decode("utf-8", errors="replace").strip()
        message = snippet or f"HTTP {status}"
    retry_after: float | None = None
    retry_after_ms = headers.get("retry-after-ms")
    if retry_after_ms is not None:
        ms = parse_retry_after(retry_after_ms)
        retry_after = ms / 1000.0 if ms is not None else None
    if retry_after is None:
        retry_after = parse_retry_after(headers.get("retry-after"))
    return ProviderError(
        redact(message, secret),
        retryable=is_retryable_status(status),
        status=status,
        retry_after=retry_after,
        error_type=error_type,
    )


MAX_CALL_ID = 256


def sane_call_id(raw: Any, prefix: str) -> str:
    """The provider's id of a tool call, or one of ours starting with ``prefix`` when it
    sent none, one too long to carry around, or one with characters that are not text
    to print (NUL, a lone surrogate, a control: the record's ``tool_call_id`` cannot
    hold the first two). The id only pairs a call with its result, so ours serves as
    well. Ours are unique in the session: the whole history goes back to the model at
    each step, perhaps to a fallback connection's provider, which may refuse two calls
    of one id."""
    if isinstance(raw, str) and 0 < len(raw) <= MAX_CALL_ID and raw.isprintable():
        return raw
    return f"{prefix}_{secrets.token_hex(6)}"


def distinct_call_ids(calls: list[ToolCall]) -> list[ToolCall]:
    """``calls`` with each id held by an earlier call made distinct by a suffix."""
    seen: set[str] = set()
    out: list[ToolCall] = []
    for call in calls:
        new_id, n = call.id, 1
        while new_id in seen:
            suffix = f"_{n}"
            new_id, n = call.id[: MAX_CALL_ID - len(suffix)] + suffix, n + 1
        seen.add(new_id)
        out.append(call if new_id == call.id else replace(call, id=new_id))
    return out


def malformed(detail: str, *, secret: str | None = None) -> ProviderError:
    """A 200 whose body is not the structure the protocol promises: retry may help."""
    return ProviderError(f"{MALFORMED}: {redact(detail, secret)}", retryable=True, status=200)


async def _read_capped(response: Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, response.status)
    body = bytearray()
    async for chunk in body_chunks(response):
        body.extend(chunk)
        if len(body) > limit:
            raise _too_large(limit, response.status)
    return bytes(body)


class StreamedText:
    """Counts the text a streamed reply has delivered: past ``MAX_REPLY_BYTES`` it is the
    same (retryable) provider error as a whole reply over the bound."""

    def __init__(self) -> None:
        self.size = 0

    def add(self, delta: str) -> None:
        # surrogatepass: a broken model can send lone surrogates, kept as they are.
        self.size += len(delta.encode("utf-8", "surrogatepass"))
        if self.size > MAX_REPLY_BYTES:
            raise _too_large(MAX_REPLY_BYTES, 200)


def transport_error(exc: Exception, timeout_seconds: float, secret: str | None) -> ProviderError:
    """The provider error for a request that got no HTTP answer (whole or streamed)."""
    if isinstance(exc, TimeoutError):
        return ProviderError(
            f"no reply within {timeout_seconds}s ({type(exc).__name__})", retryable=True
        )
    if isinstance(exc, UnusableProxy):
        return ProviderError(str(exc), retryable=False)
    if bad_url(exc):
        # A misconfigured base URL: retrying cannot fix it.
        return ProviderError(f"bad provider URL: {redact(str(exc), secret)}", retryable=False)
    return ProviderError(
        f"connection failed ({type(exc).__name__}): {redact(str(exc), secret)}", retryable=True
    )


def _too_large(limit: int, status: int) -> ProviderError:
    return ProviderError(f"reply larger than {limit} bytes", retryable=True, status=status)


def make_client(timeout: float) -> HttpClient:
    """An HTTP client for a provider. It makes no retries of its own, because Temporal's
    retry policy owns retries."""
    return HttpClient(timeout)


async def post_json(
    client: HttpClient,
    url: str,
    payload: dict[str, Any],
    *,
    headers: Mapping[str, str],
    timeout_seconds: float,
    secret: str | None,
    max_bytes: int = MAX_REPLY_BYTES,
) -> tuple[Any, float]:
    """POST JSON once and return (parsed body, latency in ms) or raise ProviderError.

    A body over ``max_bytes`` is not read to its end: it is a (retryable) provider error,
    so no reply, however large, can exhaust the worker's memory."""
    body = encode_json(payload)
    started = time.perf_counter()
    # The client's errors are not chained (``from None``): their message is folded into
    # ours, and their tracebacks through the client would make the Temporal failure exceed
    # the server's 4 KB activity-failure limit, which then shows only "Failure exceeds size
    # limit." instead of why the model call failed (and could carry an unredacted URL).
    try:
        async with client.post(
            url, body, headers=headers, timeout_seconds=timeout_seconds
        ) as response:
            content = await _read_capped(response, max_bytes)
    except RequestFailed as exc:
        raise transport_error(exc, timeout_seconds, secret) from None
    latency_ms = (time.perf_counter() - started) * 1000.0
    if not 200 <= response.status < 300:
        raise error_from_response(response.status, response.headers, content, secret=secret)
    try:
        data = jsonlimits.loads(content)
    except jsonlimits.TooDeep:
        raise malformed("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        snippet = content[:_SNIPPET].decode("utf-8", errors="replace")
        raise malformed(f"body is not JSON: {snippet!r}", secret=secret) from None
    return data, latency_ms


# ---------------------------------------------------------------------------------------
# Streaming: Server-Sent Events from the provider.

JSON_REPLY = "vigil.json-reply"
"""The event name ``post_sse`` gives a whole JSON body, sent by a server that ignored
``stream: true`` (some compatible servers do): the provider parses it as usual."""


@dataclass(frozen=True)
class SseMessage:
    event: str | None
    data: str


_LINE_END = re.compile(r"\r\n|\r|\n")


class SseLines:
    """The lines of an event stream fed chunk by chunk, in time linear in its length.

    A line longer than a chunk is kept as pieces and joined once when its end arrives
    (re-splitting a growing buffer with every chunk made a 32 MiB event cost minutes),
    and a CR LF cut between two chunks is one line end, not two."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._after_cr = False
        self.pending_size = 0
        """Characters of the line whose end has not arrived."""

    @property
    def pending(self) -> str:
        """The start of a line whose end has not arrived."""
        return "".join(self._pieces)

    def feed(self, chunk: str) -> list[str]:
        """The lines that ``chunk`` completes."""
        if self._after_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith("\r")
        lines = _LINE_END.split(chunk)
        if len(lines) == 1:
            if chunk:
                self._pieces.append(chunk)
                self.pending_size += len(chunk)
            return []
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = "".join(self._pieces)
        last = lines.pop()
        self._pieces = [last] if last else []
        self.pending_size = len(last)
        return lines


def stream_broken(detail: str) -> ProviderError:
    """The stream stopped before its end: a retry asks again from the start."""
    return ProviderError(f"stream broken: {detail}", retryable=True, status=200)


async def post_sse(
    client: HttpClient,
    url: str,
    payload: dict[str, Any],
    *,
    headers: Mapping[str, str],
    timeout_seconds: float,
    secret: str | None,
    max_bytes: int = MAX_STREAM_BYTES,
    last: Callable[[SseMessage], bool] | None = None,
) -> AsyncGenerator[SseMessage, None]:
    """POST JSON once and yield the Server-Sent Events of the reply, or raise ProviderError.

    ``timeout_seconds`` bounds each wait for bytes, not the whole stream, so a long reply
    that keeps coming is never cut. More than ``max_bytes`` in all is a provider error.
    ``last`` tells the protocol's final event: closed right after one, the generator reads
    the body's end so the connection goes back to the client's pool (closed at any other
    point, the connection is closed with the reply).
    """
    body = encode_json(payload)
    try:
        async with client.post(
            url, body, headers=headers, timeout_seconds=timeout_seconds
        ) as response:
            if not 200 <= response.status < 300:
                content = await _read_capped(response, MAX_REPLY_BYTES)
                raise error_from_response(response.status, response.headers, content, secret=secret)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A whole reply, not a stream: the bound of a whole reply.
                content = await _read_capped(response, MAX_REPLY_BYTES)
                yield SseMessage(JSON_REPLY, content.decode("utf-8", errors="replace"))
                return
            total = 0
            splitter = SseLines()
            event: str | None = None
            data: list[str] = []
            held = 0  # characters of the event being read (its data lines)
            chunks = _text_chunks(response)
            ended = False
            try:
                async for chunk in chunks:
                    total += len(chunk)
                    if total > max_bytes:
                        raise _too_large(max_bytes, response.status)
                    for line in splitter.feed(chunk):
                        if not line:
                            if data:
                                message = SseMessage(event, "\n".join(data))
                                ended = last is not None and last(message)
                                yield message
                            event, data, held = None, [], 0
                        elif not line.startswith(":"):
                            name, _, value = line.partition(":")
                            value = value.removeprefix(" ")
                            if name == "event":
                                event = value
                            elif name == "data":
                                data.append(value)
                                held += len(value)
                    # One event is held whole until its end: no more than a whole reply.
                    if held + splitter.pending_size > MAX_REPLY_BYTES:
                        raise _too_large(MAX_REPLY_BYTES, response.status)
                if data:
                    yield SseMessage(event, "\n".join(data))
            except GeneratorExit:
                if ended:
                    # The caller has its reply: what is left is the body's end, read so
                    # the connection goes back to the client's pool.
                    await _drain(chunks)
                raise
    except RequestFailed as exc:
        raise transport_error(exc, timeout_seconds, secret) from None


async def _text_chunks(response: Response) -> AsyncIterator[str]:
    """The body as text as it arrives, in the charset the response names (UTF-8 if none);
    bytes that do not decode become U+FFFD."""
    try:
        decoder = codecs.getincrementaldecoder(response.charset or "utf-8")(errors="replace")
    except LookupError:  # a charset Python does not know
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in body_chunks(response):
        text = decoder.decode(chunk)
        if text:
            yield text
    rest = decoder.decode(b"", final=True)
    if rest:
        yield rest


DRAIN_CHARS = 64 * 1024
DRAIN_SECONDS = 1.0


async def _drain(chunks: AsyncIterator[str]) -> None:
    """Read the rest of a streamed reply after its last event. A kept-alive connection is
    reused only once its reply is read to the end; one with more than ``DRAIN_CHARS``
    characters left, or not ending within ``DRAIN_SECONDS``, is closed instead (at once
    when the call is being cancelled)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return
    left = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in chunks:
                left += len(chunk)
                if left > DRAIN_CHARS:
                    return
    except RequestFailed:
        return


def sse_json(message: SseMessage, *, secret: str | None = None) -> Any:
    """The JSON data of one streamed event (a malformed one is a retryable error)."""
    try:
        return jsonlimits.loads(message.data)
    except jsonlimits.TooDeep:
        raise malformed("JSON nested too deeply") from None
    except ValueError:
        raise malformed(f"event is not JSON: {message.data[:_SNIPPET]!r}", secret=secret) from None
