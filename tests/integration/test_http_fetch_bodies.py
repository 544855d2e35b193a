"""`http_fetch` takes a compressed body within its size limit, decompressed as it comes.

httpx decompressed each network read whole before the size check ran, and asked for every
encoding it could decode (zstd among them): a reply of 8 KB became 256 MiB in one piece,
and stacked encodings more, enough to have the worker killed for its memory. A host name
IDNA refuses (``xn--a.com``) raised out of the URL check instead of a refusal, which, for a
call folded into the model activity, failed the model call on every retry.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from vigil.activities.tools import registry
from vigil.activities.tools.http_fetch import FetchPolicy, checked_url, fetch_url

pytestmark = pytest.mark.integration

TEXT = b"the quick brown fox jumps over the lazy dog\n" * 100
BOMB = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros, about 64 KB sent


@contextlib.contextmanager
def answering(bodies: dict[str, tuple[bytes, str]]) -> Iterator[tuple[int, list[str]]]:
    """A server answering each path with (body, Content-Encoding); the Accept-Encoding
    headers it was sent."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.headers.get("Accept-Encoding", ""))
            body, encoding = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


async def test_compressed_bodies_are_held_to_the_limit_decompressed() -> None:
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies = {
        "/gzip": (gzip.compress(TEXT), "gzip"),
        "/deflate": (zlib.compress(TEXT), "deflate"),
        "/raw-deflate": (raw_deflate.compress(TEXT) + raw_deflate.flush(), "deflate"),
        "/plain": (TEXT, ""),
        "/bomb": (BOMB, "gzip"),
        "/twice": (gzip.compress(gzip.compress(TEXT)), "gzip, gzip"),
        "/zstd": (b"(\xb5/\xfd\x00X\x00\x00", "zstd"),
        "/broken": (b"not gzip at all", "gzip"),
        # A small gzip stream, then bytes zlib would keep past its end (each read copied).
        "/trailing": (gzip.compress(TEXT) + b"x" * 3_000_000, "gzip"),
    }
    with answering(bodies) as (port, asked):
        policy = FetchPolicy.parse(f"127.0.0.1:{port}")

        async def get(path: str) -> bytes:
            url = f"http://127.0.0.1:{port}{path}"
            return (await fetch_url(url, policy, max_bytes=100_000, timeout=10)).body

        for path in ("/gzip", "/deflate", "/raw-deflate", "/plain"):
            assert await get(path) == TEXT, path
        with pytest.raises(registry.ToolFailed, match="larger than the 100000-byte limit"):
            await get("/bomb")
        with pytest.raises(registry.ToolFailed, match="encoded 2 times over"):
            await get("/twice")
        with pytest.raises(registry.ToolFailed, match="'zstd', which is not taken"):
            await get("/zstd")
        with pytest.raises(registry.ToolFailed, match="could not be decompressed"):
            await get("/broken")
        with pytest.raises(registry.ToolFailed, match="past the end of its compressed data"):
            await get("/trailing")
    assert set(asked) == {"gzip, deflate"}


@pytest.mark.parametrize("url", ["http://xn--a.com/", "http://xn--/x"])
def test_a_host_name_idna_refuses_is_refused(url: str) -> None:
    with pytest.raises(registry.ToolFailed, match="not a valid host name"):
        checked_url(url, FetchPolicy.parse("*"))
