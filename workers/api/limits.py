"""A cap on request bodies, enforced while the body streams in (413 past it)."""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


def _reply_413(limit: int) -> tuple[Message, Message]:
    body = json.dumps(
        {
            "error": {
                "code": "payload_too_large",
                "message": f"the request body is over {limit} bytes",
            }
        }
    ).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimit:
    """Refuse bodies over ``limit`` bytes, by Content-Length up front or by counting; paths
    matching ``unbounded`` (streamed uploads) are left to their route."""

    def __init__(self, app: ASGIApp, *, limit: int, unbounded: str | None = None) -> None:
        self.app = app
        self.limit = limit
        self.unbounded = re.compile(unbounded) if unbounded else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.unbounded is not None and self.unbounded.search(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    for message in _reply_413(self.limit):
                        await send(message)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                for message in _reply_413(self.limit):
                    await send(message)
