"""The HTTP client model providers and embedders call their APIs with.

One pool of kept-alive connections per client (aiohttp), opened in the running event loop
on first use. A model call is on the path of every step, and with a fast model the
client's own work is a visible part of it: an aiohttp request costs this process about a
quarter of the CPU the previous client's did (``bench/provider_http.py`` prints both).

The client never retries and never follows redirects: Temporal's retry policy owns
retries, and a provider that redirects is misconfigured. Proxies in the environment
(``HTTPS_PROXY``, ``NO_PROXY``...) are honoured. Each request is a client span when
tracing is on, and carries the trace context to the provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger("vigil.activities.models.http")

_tracer = trace.get_tracer("vigil.activities.models.http")

POOL_SIZE = 100
"""Connections open at once per client (across the hosts it calls)."""
KEEP_IDLE_SECONDS = 15.0
"""How long an unused connection is kept for the next request."""

Response = aiohttp.ClientResponse
RequestFailed = (aiohttp.ClientError, asyncio.TimeoutError)
"""What a request raises when no (whole) HTTP answer arrived: refused, reset, timed out,
a broken or malformed response."""
BadUrl = (aiohttp.InvalidURL,)
"""A URL no request can be made to (retrying cannot help). ``NonHttpUrlClientError`` and
``InvalidUrlClientError`` are its subclasses."""


def encode_json(payload: Any) -> bytes:
    """The request body: compact JSON in UTF-8, no NaN (what providers parse)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


class HttpClient:
    """Kept-alive connections to providers, shared by every request made through it.

    ``timeout`` bounds each wait (for a connection, for bytes), not a whole reply: a long
    reply that keeps coming is never cut. A request may name its own.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}

    def __repr__(self) -> str:
        return f"HttpClient(timeout={self.timeout})"

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            # A session belongs to the loop it was made in; another loop gets its own.
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=POOL_SIZE, limit_per_host=0, keepalive_timeout=KEEP_IDLE_SECONDS
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
            self._session, self._loop = session, loop
        return session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        found = self._timeouts.get(seconds)
        if found is None:
            found = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=None, connect=seconds, sock_connect=seconds, sock_read=seconds
            )
        return found

    def _proxy(self, url: str) -> str | None:
        """The proxy the environment names for ``url``'s scheme and host (``NO_PROXY``
        honoured), read once per host. Not the client's own ``trust_env``, which reads
        ``~/.netrc`` in a thread on every request."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            proxies = urllib.request.getproxies_environment()
            found = proxies.get(parts.scheme) or proxies.get("all")
            if found and urllib.request.proxy_bypass(parts.hostname or ""):
                found = None
            self._proxies[key] = found or None
        return self._proxies[key]

    @asynccontextmanager
    async def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str],
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[Response]:
        """POST ``body`` once; the response is open (its body unread) inside the block.

        Left with its body read to the end, the connection goes back to the pool; left at
        any other point, it is closed.
        """
        sent = dict(headers)
        with _tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "POST", "url.full": url},
        ) as span:
            propagate.inject(sent)
            async with self._open().post(
                url,
                data=body,
                headers=sent,
                timeout=self._timeout(timeout_seconds or self.timeout),
                allow_redirects=False,
                proxy=self._proxy(url),
            ) as response:
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 400:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(response.status))
                log.debug("HTTP request: POST %s -> %d", url, response.status)
                yield response

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


async def body_chunks(response: Response) -> AsyncIterator[bytes]:
    """The response's body as it arrives (decompressed), chunk by chunk."""
    async for chunk in response.content.iter_any():
        yield chunk
