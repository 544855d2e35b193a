"""A real local HTTP server that receives webhook deliveries: it answers the first
``fail_first`` requests with 503 (a receiver that is down for a while), then 200, and
keeps every request it got (headers and body) for the test to check. One made with
``hang`` answers nothing until the block ends (a receiver that hangs)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    hang: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)
    held: int = 0
    """Requests a hanging receiver holds (or held) unanswered."""
    reply: tuple[int, bytes] | None = None
    """What every request is answered with (its status and body), when set."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            code = 503 if len(self.requests) < self.fail_first else 200
            if self.reply is not None:
                code = self.reply[0]
            self.requests.append(Received(path, headers, body, code))
            return code

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.answered == 200]


@contextmanager
def webhook_receiver(
    fail_first: int = 0, *, hang: bool = False, reply: tuple[int, bytes] | None = None
) -> Iterator[Receiver]:
    """Serve on a free loopback port until the block ends; with ``reply``, every request
    is answered with that status and body."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(size)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if receiver.hang is not None:
                with receiver._lock:
                    receiver.held += 1
                receiver.hang.wait(60)
                return
            code = receiver.answer(self.path, headers, body)
            reply = b"ok" if code == 200 else b"down for maintenance"
            if receiver.reply is not None:
                reply = receiver.reply[1]
            self.send_response(code)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(
        url=f"http://127.0.0.1:{server.server_address[1]}/hook",
        fail_first=fail_first,
        hang=threading.Event() if hang else None,
        reply=reply,
    )
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if receiver.hang is not None:
            receiver.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
