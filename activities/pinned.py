"""HTTP requests that go to an address checked before the connection, never to a second
lookup of the name (DNS rebinding cannot swap it): the `http_fetch` tool's and webhook
deliveries'. The caller resolves the name once, checks each address by its own rule, and
hands the checked ones here; TLS still verifies the certificate against the name."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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


class _Pool:
    """A host's transport and how many requests hold it (their responses not yet closed)."""

    __slots__ = ("retired", "transport", "users")

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport
        self.users = 0
        self.retired = False


class HostTransports:
    """One connection pool per host name. A request sent to an address is pooled by that
    address; were names sharing an address pooled together, a kept-alive TLS connection
    made for (and checked against) one name would carry another's request. The least
    recently used pool past ``MAX_HOSTS`` is closed, once no response read from it is
    still open."""

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport]) -> None:
        self._make = make
        self._pools: OrderedDict[str, _Pool] = OrderedDict()

    async def take(self, host: str) -> _Pool:
        """``host``'s pool, held until :meth:`give_back`."""
        pool = self._pools.pop(host, None) or _Pool(self._make())
        self._pools[host] = pool
        while len(self._pools) > MAX_HOSTS:
            _, old = self._pools.popitem(last=False)
            old.retired = True
            if not old.users:
                await _close(old)
        pool.users += 1  # once nothing here can fail: the caller gives it back
        return pool

    async def give_back(self, pool: _Pool) -> None:
        pool.users -= 1
        if pool.retired and not pool.users:
            await _close(pool)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.retired = True
            if not pool.users:
                await _close(pool)


async def _close(pool: _Pool) -> None:
    """A retired pool's connections closed; one that fails to close is no one's concern
    (its sockets go with it), least of all the request that retired it."""
    with contextlib.suppress(Exception):
        await pool.transport.aclose()


class _GivenBack(httpx.AsyncByteStream):
    """A response's body that gives its pool back when it is closed."""

    def __init__(self, inner: httpx.AsyncByteStream, pools: HostTransports, pool: _Pool) -> None:
        self._inner = inner
        self._back: Callable[[], Awaitable[None]] | None = lambda: pools.give_back(pool)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        back, self._back = self._back, None
        try:
            await self._inner.aclose()
        finally:
            if back is not None:
                await back()


async def send_pinned(
    pools: HostTransports, request: httpx.Request, host: str, addresses: Sequence[str]
) -> httpx.Response:
    """``request`` sent to the first of ``addresses`` (checked ones of ``host``) that takes
    the connection, over ``host``'s own pool; the Host header stays the name's, and an
    https request names the host for SNI and the certificate check."""
    pool = await pools.take(host)
    try:
        response = await _send(pool.transport, request, host, addresses)
    except BaseException:
        await pools.give_back(pool)
        raise
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)  # a transport's response is async
    response.stream = _GivenBack(stream, pools, pool)
    return response


async def _send(
    inner: httpx.AsyncBaseTransport, request: httpx.Request, host: str, addresses: Sequence[str]
) -> httpx.Response:
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
