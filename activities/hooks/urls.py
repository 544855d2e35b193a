"""Which URLs a webhook may be configured with (``vigil webhook add``, an agent file's
``[[webhooks]]``) and is posted to (``activities.hooks.delivery``)."""

from __future__ import annotations

import ipaddress
import urllib.request
from urllib.parse import urlsplit

import httpx

from vigil.activities.pinned import HostTransports, Resolver, resolve_host, send_pinned
from vigil.schema.hooks import unreachable_for_webhooks


def url_problem(url: str) -> str | None:
    """Why ``url`` is no webhook's, or None: one the delivery cannot parse, or whose host
    is written as an address no webhook is sent to (a link-local one: cloud metadata). A
    host name is checked when a delivery resolves it."""
    try:
        parts = httpx.URL(url)  # as the delivery parses it
        host = urlsplit(url).hostname or ""
    except (ValueError, httpx.InvalidURL) as exc:
        return f"not a valid URL: {exc}"
    if parts.port is not None and not 0 < parts.port < 65536:
        # httpx takes any number; the POST then failed at connect, every attempt.
        return f"not a valid URL: port {parts.port} is outside 1-65535"
    return unreachable_for_webhooks(host)


class WebhookRefused(Exception):
    """The webhook's host is or resolves to an address no webhook is sent to."""


class _CheckedAddresses(httpx.AsyncBaseTransport):
    """Resolves a webhook's host once, refuses it when any of its addresses is one no
    webhook is sent to, and connects to the addresses it checked (``activities.pinned``):
    a name that answered a safe address to the check cannot answer another to the
    connection. A URL an HTTP proxy of the environment covers goes through that proxy,
    which resolves the name itself."""

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self.pools = HostTransports(httpx.AsyncHTTPTransport)
        self.proxied: dict[str, httpx.AsyncBaseTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        proxy = environment_proxy(request.url)
        if proxy is not None:
            if proxy not in self.proxied:
                self.proxied[proxy] = httpx.AsyncHTTPTransport(proxy=proxy)
            return await self.proxied[proxy].handle_async_request(request)
        try:
            ipaddress.ip_address(host)
            addresses = [host]
        except ValueError:
            try:
                addresses = await self.resolve(host)
            except (OSError, UnicodeError) as exc:
                raise httpx.ConnectError(f"could not resolve {host}: {exc}") from exc
        for address in addresses:
            if (why := unreachable_for_webhooks(address, host)) is not None:
                raise WebhookRefused(why)
        return await send_pinned(self.pools, request, host, addresses)

    async def aclose(self) -> None:
        await self.pools.aclose()
        for proxied in self.proxied.values():
            await proxied.aclose()


def environment_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``), None when none does or ``NO_PROXY`` covers its host."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(url.host, proxies):  # type: ignore[attr-defined]
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def webhook_client(resolve: Resolver = resolve_host) -> httpx.AsyncClient:
    """The client deliveries POST with: a connection it makes itself goes to an address it
    checked; through a proxy of the environment (``HTTPS_PROXY``/``HTTP_PROXY``,
    ``NO_PROXY`` honoured) the proxy resolves the name, and its addresses are not checked
    here."""
    return httpx.AsyncClient(transport=_CheckedAddresses(resolve), trust_env=False)
