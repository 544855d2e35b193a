"""HTTP requests that go to an address checked before the connection, never to a second
lookup of the name (DNS rebinding cannot swap it): the `http_fetch` tool's and webhook
deliveries'. The caller resolves the name once, checks each address by its own rule, and
hands the checked ones here; TLS still verifies the certificate against the name."""

from __future__ import annotations

import asyncio
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

Resolver = Callable[[str], Awaitable[list[str]]]
"""host name -> the addresses it resolves to (text); OSError when it does not resolve."""


async def resolve_host(host: str) -> list[str]:
    """The addresses of ``host``, as the system resolver gives them, each once."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


MAX_HOSTS = 64
"""Host names whose connections a :class:`HostTransports` keeps open at once."""


class HostTransports:
    """One connection pool per host name. A request sent to an address is pooled by that
    address; were names sharing an address pooled together, a kept-alive TLS connection
    made for (and checked against) one name would carry another's request. The least
    recently used pool past ``MAX_HOSTS`` is closed."""

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport]) -> None:
        self._make = make
        self._pools: OrderedDict[str, httpx.AsyncBaseTransport] = OrderedDict()

    async def of(self, host: str) -> httpx.AsyncBaseTransport:
        pool = self._pools.pop(host, None) or self._make()
        self._pools[host] = pool
        while len(self._pools) > MAX_HOSTS:
            _, old = self._pools.popitem(last=False)
            await old.aclose()
        return pool

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()


async def send_pinned(
    pools: HostTransports, request: httpx.Request, host: str, addresses: Sequence[str]
) -> httpx.Response:
    """``request`` sent to the first of ``addresses`` (checked ones of ``host``) that takes
    the connection, over ``host``'s own pool; the Host header stays the name's, and an
    https request names the host for SNI and the certificate check."""
    inner = await pools.of(host)
    extensions: dict[str, Any] = dict(request.extensions)
    if request.url.scheme == "https":
        extensions["sni_hostname"] = host
    failed: httpx.ConnectError | None = None
    for address in addresses:
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address.split("%", 1)[0]),
            headers=request.headers,  # Host: set from the name when the request was built
            stream=request.stream,
            extensions=extensions,
        )
        try:
            return await inner.handle_async_request(pinned)
        except httpx.ConnectError as exc:
            failed = exc
    if failed is None:
        raise httpx.ConnectError(f"{host} resolved to no address", request=request)
    raise failed
