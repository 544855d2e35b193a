"""URLs whose percent-encoding is not UTF-8, or whose query holds NUL, are refused (422)
before any route sees them.

The server decodes leniently: ``%ff``, ``%fe`` and ``%ef%bf%bd`` all become U+FFFD, so
two different conversation keys (or session ids, artifact names, agent ids) would name
one thing, and a query value (``?agent=%ff``, ``?q=%fe``) would filter or search for a
text nobody sent. The raw path and the raw query string, as sent, are what is checked.
NUL is refused in the query as one rule: no parameter can hold it (PostgreSQL cannot
store it), and each route answered it its own way, or not at all.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.convertors import PathConvertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

from vigil.workers.api.errors import INVALID, error_response

PATH_NOT_UTF8 = "the path is not valid UTF-8 once percent-decoded (each %XX is one byte)"
QUERY_NOT_UTF8 = "the query string is not valid UTF-8 once percent-decoded (each %XX is one byte)"
QUERY_NUL = "the query string holds a NUL character (%00), which no parameter may contain"


class AnyText(PathConvertor):
    """``{name:text}``: the rest of a path as ``{name:path}`` takes it, line breaks
    included. ``path``'s pattern stops at a line feed, so a key or an artifact name holding
    one matched no route (a bare 404) where any other control character reached the route,
    which says what is wrong with it (422)."""

    regex = "(?s:.*)"


register_url_convertor("text", AnyText())


def utf8_decoded(raw: bytes) -> str | None:
    """``raw`` percent-decoded as UTF-8; None when the bytes are not UTF-8 (surrogates
    included)."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def url_problem(raw_path: bytes | None, query: bytes) -> str | None:
    """What is wrong with the URL, as a message; None when nothing is."""
    if raw_path is not None and utf8_decoded(raw_path) is None:
        return PATH_NOT_UTF8
    decoded = utf8_decoded(query)
    if decoded is None:
        return QUERY_NOT_UTF8
    if "\x00" in decoded:
        return QUERY_NUL
    return None


class Utf8Urls:
    """Answer 422 ``invalid_request`` to a request whose raw path or query string decodes
    to bytes that are not UTF-8, or whose query holds NUL; others pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")  # absent under a server that does not keep it
            query = scope.get("query_string", b"")
            problem = url_problem(raw if isinstance(raw, bytes) else None, query)
            if problem is not None:
                await error_response(422, INVALID, problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)
