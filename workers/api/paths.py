"""Paths whose percent-encoding is not UTF-8 are refused (422) before any route sees them.

The server decodes the path leniently: ``%ff``, ``%fe`` and ``%ef%bf%bd`` all become
U+FFFD, so two different conversation keys (or session ids, artifact names, agent ids)
would name one thing. The raw path, as sent, is what is checked.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from vigil.workers.api.errors import INVALID, error_response

NOT_UTF8 = "the path is not valid UTF-8 once percent-decoded (each %XX is one byte)"


def is_utf8_path(raw_path: bytes) -> bool:
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Utf8Paths:
    """Answer 422 ``invalid_request`` to a request whose raw path decodes to bytes that
    are not UTF-8 (surrogates included); others pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")  # absent under a server that does not keep it
        if scope["type"] == "http" and isinstance(raw, bytes) and not is_utf8_path(raw):
            await error_response(422, INVALID, NOT_UTF8)(scope, receive, send)
            return
        await self.app(scope, receive, send)
