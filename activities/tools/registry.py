"""The tool registry: JSON-Schema validation and the built-in tools' implementations.

Invalid arguments never crash a session: ``validate`` returns an error string that goes
back to the model as the tool's result.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from vigil.activities.agents.catalog import offered
from vigil.activities.config import ActivitySettings
from vigil.activities.memory.values import UnstorableText

# Re-exported: callers use them as registry.BuiltinContext, registry.ToolFailed, ...
from vigil.activities.tools.base import BuiltinContext as BuiltinContext
from vigil.activities.tools.base import ToolFailed as ToolFailed
from vigil.activities.tools.base import ToolFn as ToolFn
from vigil.activities.tools.base import ToolOutcome as ToolOutcome
from vigil.activities.tools.http_fetch import http_fetch
from vigil.activities.tools.http_fetch import refusal as http_fetch_refusal
from vigil.schema import jsonlimits
from vigil.schema.arguments import invalid_arguments
from vigil.schema.jsonlimits import MAX_ARGUMENT_DEPTH
from vigil.schema.payloads import preview
from vigil.schema.tools import BUILTIN_TOOLS, ToolInfo


def _validator(info: ToolInfo) -> Draft202012Validator:
    return Draft202012Validator(info.parameters, format_checker=FormatChecker())


_VALIDATORS = {name: _validator(info) for name, info in BUILTIN_TOOLS.items()}
TOO_DEEP = f"arguments are nested deeper than {MAX_ARGUMENT_DEPTH} levels"


def parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a model's raw argument string; (None, error) when it is not a JSON object."""
    if raw.strip() == "":
        return {}, None
    try:
        value = jsonlimits.loads(raw, MAX_ARGUMENT_DEPTH, finite=True)
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON ({exc.msg} at char {exc.pos})"
    except jsonlimits.NotJsonNumber as exc:
        return None, f"arguments are not valid JSON ({exc})"
    except jsonlimits.TooDeep:
        return None, TOO_DEEP
    if not isinstance(value, dict):
        return None, "arguments must be a JSON object"
    return value, None


def check_shape(arguments: dict[str, Any]) -> str | None:
    """Arguments that did not come from ``parse_arguments`` (a human's edit): the same
    nesting limit."""
    if jsonlimits.depth(arguments, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
        return TOO_DEEP
    if (constant := jsonlimits.non_finite(arguments)) is not None:
        return f"arguments are not valid JSON ({constant} is not a JSON number)"
    return None


def validate(name: str, arguments: dict[str, Any], allowed: list[str] | None = None) -> str | None:
    """None when the call may run; otherwise the error to send back to the model."""
    if name not in BUILTIN_TOOLS:
        shown = preview(name, 100)
        return f"unknown tool {shown!r}; available: {', '.join(offered(BUILTIN_TOOLS, allowed))}"
    if allowed is not None and name not in allowed:
        return f"tool {name!r} is not allowed in this session"
    return invalid_arguments(name, _VALIDATORS[name], arguments)


# --- implementations -------------------------------------------------------------------


async def write_artifact(ctx: BuiltinContext, args: dict[str, Any]) -> ToolOutcome:
    from vigil.activities.artifacts.registry import (
        InvalidArtifactName,
        InvalidMediaType,
        put_artifact,
        type_of_text,
    )

    data = str(args["content"]).encode("utf-8", errors="surrogatepass")
    try:
        ref = await put_artifact(
            ctx.store,
            ctx.sessionmaker,
            agent_id=ctx.agent_id,
            session_id=ctx.session_id,
            name=str(args["name"]),
            data=data,
            mime_type=str(args.get("mime_type") or type_of_text(str(args["name"]))),
        )
    except (InvalidArtifactName, InvalidMediaType) as exc:
        raise ToolFailed(str(exc)) from exc
    return ToolOutcome(
        f"stored artifact {ref.name!r} ({ref.size} bytes, sha256 {ref.sha256})",
        {"sha256": ref.sha256, "size": ref.size, "name": ref.name},
    )


READ_WHOLE_BYTES = 4 * 1024 * 1024
"""An artifact up to this size is read whole for a page of it; a larger one is read as a
stream, holding a chunk and the page at a time (an upload may be a GiB)."""


async def read_artifact(ctx: BuiltinContext, args: dict[str, Any]) -> ToolOutcome:
    from vigil.activities.artifacts.registry import iterate_in_thread, resolve_artifact
    from vigil.activities.artifacts.store import ArtifactError, UnknownArtifact

    max_chars = int(args.get("max_chars", 20_000))
    offset = int(args.get("offset", 0))
    name = str(args["name"])
    try:
        ref = await resolve_artifact(
            ctx.sessionmaker, agent_id=ctx.agent_id, session_id=ctx.session_id, name=name
        )
        if ref.size <= READ_WHOLE_BYTES:
            data = await asyncio.to_thread(ctx.store.get_bytes, ref.sha256)
            text = data.decode("utf-8", errors="replace")
            window, total, size = text[offset : offset + max_chars], len(text), len(data)
        else:
            chunks = await asyncio.to_thread(ctx.store.open, ref.sha256)
            window, total, size = await _window(iterate_in_thread(chunks), offset, max_chars)
    except UnknownArtifact as exc:
        raise ToolFailed(f"this session has no artifact named {preview(name, 200)!r}") from exc
    except (ArtifactError, ValueError) as exc:
        raise ToolFailed(str(exc)) from exc
    # At most what the session keeps inline (a longer answer would be stored as an
    # artifact in turn, and read back cut again): the rest is read on from where it says.
    room = max(1, ctx.settings.inline_limit_bytes - 200)
    part = _fitting(window, room)
    end = offset + len(part)
    if end >= total and offset == 0:
        return ToolOutcome(part, {"bytes": size})
    said = f"characters {offset}-{end} of {total}"
    more = f"; read on with offset={end}" if end < total else "; the end"
    return ToolOutcome(f"{part}\n[{said}{more}]", {"bytes": size, "offset": offset})


async def _window(
    chunks: AsyncIterator[bytes], offset: int, max_chars: int
) -> tuple[str, int, int]:
    """Characters ``offset`` to ``offset + max_chars`` of UTF-8 ``chunks`` (undecodable
    bytes replaced, as a whole read decodes them), their total count and the bytes':
    read to the end (the stream checks the digest there), holding one chunk at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces: list[str] = []
    kept = total = size = 0
    async for chunk in chunks:
        size += len(chunk)
        text = decoder.decode(chunk)
        start, total = total, total + len(text)
        if kept < max_chars and total > offset:
            piece = text[max(0, offset - start) : max(0, offset - start) + max_chars - kept]
            pieces.append(piece)
            kept += len(piece)
    tail = decoder.decode(b"", final=True)
    if tail and kept < max_chars and total + len(tail) > offset:
        pieces.append(tail[max(0, offset - total) : max(0, offset - total) + max_chars - kept])
    return "".join(pieces), total + len(tail), size


def _fitting(text: str, limit: int) -> str:
    """The longest start of ``text`` whose UTF-8 takes at most ``limit`` bytes."""
    raw = text.encode("utf-8", errors="surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


async def remember(ctx: BuiltinContext, args: dict[str, Any]) -> ToolOutcome:
    if ctx.memory is None:
        raise ToolFailed("long-term memory is not configured on this worker")
    try:
        result = await ctx.memory.add(
            ctx.agent_id,
            str(args["content"]),
            kind=str(args.get("kind", "fact")),
            subject=args.get("subject"),
            importance=float(args.get("importance", 0.5)),
            source_session_id=ctx.session_id,
            key=ctx.call_key,
            first_attempt=ctx.first_attempt,
        )
    except UnstorableText as exc:  # the model's input, not a bug
        raise ToolFailed(str(exc)) from None
    return ToolOutcome(result.said(), {"id": result.id})


async def recall(ctx: BuiltinContext, args: dict[str, Any]) -> ToolOutcome:
    if ctx.memory is None:
        raise ToolFailed("long-term memory is not configured on this worker")
    found = await ctx.memory.recall(ctx.agent_id, str(args["query"]), k=int(args.get("k", 5)))
    if not found:
        return ToolOutcome("no memories matched")
    lines = [f"- [{m.kind}] {m.content}" for m in found]
    return ToolOutcome("\n".join(lines), {"ids": [m.id for m in found]})


IMPLEMENTATIONS: dict[str, ToolFn] = {
    "http_fetch": http_fetch,
    "write_artifact": write_artifact,
    "read_artifact": read_artifact,
    "remember": remember,
    "recall": recall,
}

REFUSALS: dict[str, Callable[[ActivitySettings, dict[str, Any]], str | None]] = {
    "http_fetch": http_fetch_refusal,
}
"""Built-ins that can refuse a call by its arguments and the settings alone, before they
do anything: the error the call would get, or None."""


def parse_wake_time(args: dict[str, Any]) -> tuple[float | None, datetime | None]:
    """(seconds, absolute UTC time) of a wait_until call; exactly one is set. Raises
    ValueError for an ``until`` that is no time (``wake_time_error`` says why)."""
    if "seconds" in args:
        return float(args["seconds"]), None
    raw = str(args["until"]).replace("Z", "+00:00")
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(
            f"{preview(str(args['until']), 100)!r} is not an ISO 8601 date and time "
            "(as 2030-01-31T09:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return None, when.astimezone(UTC)
    except OverflowError:  # its offset moves it past the year 9999, or before the year 1
        raise ValueError(f"{preview(raw, 100)!r} is out of range in UTC") from None


def wake_time_error(args: dict[str, Any]) -> str | None:
    """Why a wait_until call whose arguments fit its schema cannot wait (the schema does
    not check ``until``'s format), as an argument error for the model; None: it can."""
    try:
        parse_wake_time(args)
    except ValueError as exc:
        return f"invalid arguments for wait_until at until: {exc}"
    return None
