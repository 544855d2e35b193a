"""The HTTP client model providers and embedders call their APIs with.

One pool of kept-alive connections per client (aiohttp), opened in the running event loop
on first use. A model call is on the path of every step, and with a fast model the
client's own work is a visible part of it: a streamed model call through this client costs
this process under half the CPU of the same request through httpx, which vigil used before
(``bench/provider_http.py`` prints both).

The client never retries and never follows redirects: Temporal's retry policy owns
retries, and a provider that redirects is misconfigured. Proxies (``HTTPS_PROXY``,
``NO_PROXY``..., and the system's settings where Python reads them) are honoured; TLS is
verified against certifi's roots. Each request is a client span when this process traces
(OpenTelemetry loaded), and carries the trace context to the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import certifi
import orjson

log = logging.getLogger("vigil.activities.models.http")

POOL_SIZE = 100
"""Connections open at once per client (across the hosts it calls)."""
KEEP_IDLE_SECONDS = 4.0
"""How long an unused connection is kept for the next request: under the 5 s after which
common servers (uvicorn's default) close an idle one, since a request sent just as the
server closes its connection fails (a POST is never re-sent)."""


class UnusableProxy(ValueError):
    """The environment names a proxy this client cannot use (not an HTTP proxy)."""


Response = aiohttp.ClientResponse
RequestFailed = (aiohttp.ClientError, asyncio.TimeoutError, ValueError)
"""What a request raises when no (whole) HTTP answer arrived: refused, reset, timed out,
a broken or malformed response; or the URL (or proxy) is one no request can go to."""


def bad_url(exc: BaseException) -> bool:
    """Whether ``exc`` says no request can go to the URL (or proxy): retrying cannot help.
    A ``ValueError`` that is no client error is a URL that does not parse."""
    return isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError) or (
        isinstance(exc, ValueError) and not isinstance(exc, aiohttp.ClientError)
    )


def encode_json(payload: Any) -> bytes:
    """The request body: compact JSON in UTF-8, no NaN (what providers parse).

    Written by orjson: the body carries the whole context on every model call, and
    ``json.dumps`` took 70-115 us for a 40-message context here (2.5 ms for 500 KB),
    orjson 4-6 us (75 us).
    What orjson refuses (a lone surrogate, an integer past 64 bits, a key that is no
    string) and any float that is not finite (which orjson would write as ``null``) go
    through ``json.dumps``, whose output and errors the body always had."""
    if not _non_finite(payload):
        try:
            return orjson.dumps(payload)
        except orjson.JSONEncodeError:
            pass
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _non_finite(payload: Any) -> bool:
    """Whether a float of a request's own settings (the body's top level and the objects
    in it, such as ``generationConfig``) is NaN or infinite. Deeper values are text
    (messages, tool arguments) or schemas read from JSON, which cannot hold one."""
    if not isinstance(payload, dict):
        return False
    inner = (v for d in payload.values() if isinstance(d, dict) for v in d.values())
    return any(isinstance(v, float) and not math.isfinite(v) for v in (*payload.values(), *inner))


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
        self._tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"HttpClient(timeout={self.timeout})"

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            if session is not None and not session.closed:
                # A session belongs to the loop it was made in; another loop gets its own.
                # The old one cannot be awaited from here: its connector is marked closed
                # (its connections closed if their loop still runs), so it never warns.
                connector = session.connector
                session.detach()
                if connector is not None:
                    with contextlib.suppress(Exception):
                        connector._close()
            if self._tls is None:
                self._tls = ssl.create_default_context(cafile=certifi.where())
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=POOL_SIZE,
                    limit_per_host=0,
                    keepalive_timeout=KEEP_IDLE_SECONDS,
                    ssl=self._tls,
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
        """The proxy named for ``url``'s scheme and host (``NO_PROXY`` honoured, with or
        without a port), read once per host. Not the client's own ``trust_env``, which
        reads ``~/.netrc`` in a thread on every request."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        where = f"{host}:{parts.port}" if parts.port else host
        key = (parts.scheme, where)
        if key not in self._proxies:
            proxies = urllib.request.getproxies()
            found = proxies.get(parts.scheme) or proxies.get("all")
            if found and urllib.request.proxy_bypass(where):
                found = None
            if found and "://" not in found:
                found = "http://" + found  # ``proxy.corp:3128``, as curl reads it
            if found:
                named = urlsplit(found)
                if named.scheme not in ("http", "https"):
                    raise UnusableProxy(
                        f"the proxy {named.scheme}://{named.hostname} named for model calls "
                        "is not an HTTP proxy"
                    )
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
        proxy = self._proxy(url)
        with _span(url, sent) as span:
            async with self._open().post(
                url,
                data=body,
                headers=sent,
                timeout=self._timeout(timeout_seconds or self.timeout),
                allow_redirects=False,
                proxy=proxy,
            ) as response:
                if span is not None:
                    _answered(span, response.status)
                log.debug("HTTP request: POST %s -> %d", url, response.status)
                yield response

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


@contextlib.contextmanager
def _span(url: str, headers: dict[str, str]) -> Iterator[Any]:
    """A client span around a request, its trace context added to ``headers``, when this
    process traces (a tracer provider is set). A CLI command that calls an embedder never
    imports OpenTelemetry; a worker that does not trace makes no span at all."""
    if "opentelemetry.trace" not in sys.modules:
        yield None
        return
    from opentelemetry import propagate, trace
    from opentelemetry.trace import ProxyTracerProvider, SpanKind

    if isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
        yield None
        return

    tracer = trace.get_tracer("vigil.activities.models.http")
    with tracer.start_as_current_span(
        "POST",
        kind=SpanKind.CLIENT,
        attributes={"http.request.method": "POST", "url.full": url},
    ) as span:
        propagate.inject(headers)
        yield span


def _answered(span: Any, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR))
        span.set_attribute("error.type", str(status))


def body_chunks(response: Response) -> AsyncIterator[bytes]:
    """The response's body as it arrives (decompressed), chunk by chunk."""
    return response.content.iter_any()
