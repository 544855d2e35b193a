"""Limits on request bodies: a cap enforced while the body streams in (413 past it), and
no lone surrogate nor a key given twice in a JSON body (422), checked once here for every
route.

A refusal found here, before the route reads the body (a lone surrogate, a key given
twice, a body over the cap, by its Content-Length or by counting), is held in the
request's state (``HELD``) rather than sent: the route asks who the caller is first
(``auth.refuse_held_body``), so only a caller it admits hears what is wrong with its body.
A body over the cap is not passed on (nor read past the cap)."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.schema import jsonlimits
from vigil.workers.api.errors import MALFORMED, NOT_UTF8_BODY

HELD = "vigil_held_body_refusal"
"""Where a request's state holds the refusal of its body, as (status, code, message)."""


def _hold(scope: Scope, status: int, code: str, message: str) -> None:
    scope.setdefault("state", {})[HELD] = (status, code, message)


def _held(scope: Scope) -> bool:
    return HELD in scope.get("state", {})


UNCHECKED = "vigil_unchecked_body"
"""Where a request's state holds a JSON body not checked yet (its bytes, and whether it is
checked for twin keys): the checks parse the whole body, so they run only for a caller
its route admits (``held_refusal``), never for a request no one may make."""


def held_refusal(state: Any) -> tuple[int, str, str] | None:
    """The refusal of a request's body (status, code, message), from its request's
    ``state``: one held already, or the checks of a body not checked yet, run now."""
    held: tuple[int, str, str] | None = getattr(state, HELD, None)
    if held is not None:
        return held
    unchecked = getattr(state, UNCHECKED, None)
    if unchecked is None:
        return None
    setattr(state, UNCHECKED, None)
    body, twins = unchecked
    refusal = LONE_SURROGATE if _holds_lone_surrogate(body) else None
    if refusal is None and twins and (twin := twice_given_key(body)) is not None:
        shown = twin if len(twin) <= MAX_TWIN_CHARS else twin[:MAX_TWIN_CHARS] + "..."
        refusal = f"the body gives the key {shown!r} twice (each key once in an object)"
    if refusal is None:
        return None
    held = (422, "invalid_request", refusal)
    setattr(state, HELD, held)
    return held


def _hold_too_large(scope: Scope, limit: int) -> None:
    _hold(scope, 413, "payload_too_large", f"the request body is over {limit} bytes")


_END: Message = {"type": "http.request", "body": b"", "more_body": False}
"""The last part of a body (an empty one, when nothing of it is passed on)."""


def _no_body(receive: Receive) -> Receive:
    """``receive`` for a request whose body is not read: an empty one, then what comes."""
    given = False

    async def empty() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return _END

    return empty


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
"""A JSON escape of a surrogate (``\\ud800``..``\\udfff``): paired, or maybe lone."""

LONE_SURROGATE = (
    "the body holds a lone surrogate (a \\ud800-\\udfff escape without its pair), "
    "which is not Unicode text"
)


def _holds_lone_surrogate(body: bytes) -> bool:
    """Whether ``body`` is JSON whose text holds a lone surrogate: Python's parser takes
    ``"\\ud800"``, but no column, payload or reply can encode it as UTF-8."""
    if _SURROGATE_ESCAPE.search(body) is None:  # no such escape: nothing to parse
        return False
    try:
        value = jsonlimits.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False  # not JSON: its route says what is wrong with it
    return jsonlimits.has_lone_surrogate(value)


def _wide_text(body: bytes) -> bool:
    """Whether ``body`` reads as UTF-16 or UTF-32 (by JSON's own rule: its NUL bytes or
    byte order mark at the start). Python's parser takes such JSON, as the routes did;
    JSON between systems is UTF-8 (RFC 8259), and the checks here read UTF-8 escapes."""
    return bool(body) and not json.detect_encoding(body).startswith("utf-8")


_JSON_START = re.compile(r"^\s*[\[{]")
"""How a JSON body that may hold an object starts (others have no keys to give twice)."""


MAX_TWIN_CHARS = 200
"""A twin key's path is quoted up to this length in the refusal (the rest is elided)."""


class _Twin(dict[str, Any]):
    """An object of a parsed body that gave ``twin`` more than once."""

    twin: str


def twice_given_key(body: bytes) -> str | None:
    """The path (``budget.max_steps``, ``edited_arguments.a[0].b``) of the first key that
    an object of JSON ``body`` gives twice (an outer object before what it holds, then in
    document order); None when there is none or the body is not JSON (its route says what
    is wrong with it). Python's parser keeps a twin's last value, where the caller may
    have meant the first."""
    try:  # UTF-8 (a BOM too); UTF-16 and UTF-32, which the routes refuse, read alike
        text = body.decode(json.detect_encoding(body)).removeprefix("\ufeff")
    except (UnicodeDecodeError, LookupError):
        return None  # not text: its route says what is wrong with it
    if _JSON_START.match(text) is None:
        return None
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        value = dict(items)
        if len(value) == len(items):  # the usual case: built in C, nothing to look for
            return value
        found = True
        marked = _Twin(value)
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                marked.twin = key
                break
            seen.add(key)
        return marked

    try:
        parsed = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None
    if not found:
        return None
    pending: list[tuple[str, Any]] = [("", parsed)]
    while pending:  # depth first, in document order
        path, value = pending.pop()
        if isinstance(value, dict):
            if isinstance(value, _Twin):
                return f"{path}.{value.twin}" if path else value.twin
            children = [(f"{path}.{k}" if path else k, v) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        pending.extend(reversed(children))
    return None


class _BodyCheck:
    """A middleware that reads request bodies, except on paths matching ``unbounded``
    (streamed uploads, left to their route)."""

    def __init__(self, app: ASGIApp, *, unbounded: str | None = None) -> None:
        self.app = app
        self.unbounded = re.compile(unbounded) if unbounded else None

    def passes(self, scope: Scope) -> bool:
        """Whether the request goes on unread: not HTTP, or a path left to its route."""
        return scope["type"] != "http" or (
            self.unbounded is not None and self.unbounded.search(scope["path"]) is not None
        )


class JsonBodies(_BodyCheck):
    """Refuse (422, once the route's token check admitted the caller: the checks parse the
    body, ``held_refusal``) a request body that is JSON holding a lone surrogate or giving
    a key twice, whatever the route and its content type; paths
    matching ``unbounded`` (streamed uploads) are left to their route, and paths matching
    ``foreign`` (bodies another system writes) are not checked for twin keys. Sits inside
    :class:`BodyLimit`, so the body it reads whole is capped."""

    def __init__(
        self, app: ASGIApp, *, unbounded: str | None = None, foreign: str | None = None
    ) -> None:
        super().__init__(app, unbounded=unbounded)
        self.foreign = re.compile(foreign) if foreign else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.passes(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        # Over the cap (BodyLimit held its refusal and ended it): nothing of it goes on.
        body = b"".join(chunks) if not _held(scope) else b""
        if _wide_text(body):
            _hold(scope, 400, MALFORMED, NOT_UTF8_BODY)
        if body and not _held(scope):
            own = self.foreign is None or self.foreign.search(scope["path"]) is None
            scope.setdefault("state", {})[UNCHECKED] = (body, own)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect, for streams
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class BodyLimit(_BodyCheck):
    """Refuse bodies over ``limit`` bytes, by Content-Length up front or by counting (the
    refusal held, the body ended there); paths matching ``unbounded`` (streamed uploads)
    are left to their route."""

    def __init__(self, app: ASGIApp, *, limit: int, unbounded: str | None = None) -> None:
        super().__init__(app, unbounded=unbounded)
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.passes(scope):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    # Not read: the route sees no body, and refuses it once it admitted
                    # the caller.
                    _hold_too_large(scope, self.limit)
                    await self.app(scope, _no_body(receive), send)
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            if seen > self.limit:
                return await receive()  # ended already: a disconnect, for streams
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    _hold_too_large(scope, self.limit)
                    return _END  # read no further
            return message

        await self.app(scope, counting_receive, send)
