"""The `http_fetch` tool: GET a URL that the allowlist names, and nothing else.

The allowlist (``VIGIL_HTTP_ALLOW``, comma-separated) names hosts *and ports*:

- ``example.com`` — that host on its scheme's default port only (http 80, https 443);
  ``example.com:8080`` — that port only. IPv6 addresses are written ``[::1]:8080``.
- ``*`` — any host on the default ports (``*:8443``: that port), public addresses only.
- Loopback, link-local, private and other non-public addresses are refused unless an
  entry names that very address (and port): ``127.0.0.1:8080``. A name that resolves
  to such an address needs both entries, the name and the address.

The check is made where the connection is made: every request (the first and each
redirect) is checked by name and port, the name is resolved once, each address is
checked, and the connection goes to a checked address (never to a second lookup of the
name, so DNS rebinding cannot swap it). TLS still verifies the certificate against the
name. URLs with credentials are refused. Redirects are followed (up to five), each hop
checked the same way.

A body is taken as sent or compressed once with gzip or deflate (the only encodings
asked for), decompressed a bounded piece at a time: the limit on its size holds for what
it decompresses to, so a small compressed body cannot fill the worker's memory. Other
encodings (br, zstd, one stacked on another) are refused.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from vigil.activities.pinned import HostTransports, Resolver, resolve_host, send_pinned
from vigil.activities.tools.allowlist import (
    DEFAULT_PORTS,
    AllowEntry,
    IPAddress,
    canonical_address,
    parse_allowlist,
    unmapped,
)
from vigil.activities.tools.base import BuiltinContext, ToolFailed, ToolOutcome
from vigil.schema.hooks import LOCAL_NAT64

if TYPE_CHECKING:
    from vigil.activities.config import ActivitySettings

MAX_REDIRECTS = 5
ACCEPT_ENCODING = "gzip, deflate"
"""What a fetch asks for: encodings decompressed here a bounded piece at a time."""
_PIECE = 64 * 1024
"""Bytes decompressed at most per step."""


class _Body:
    """A response's body as it arrives (raw), decoded by its ``Content-Encoding`` and
    refused once it would pass ``max_bytes`` decoded."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        names = [e.strip().lower() for e in encoding.split(",") if e.strip()]
        names = [e for e in names if e != "identity"]
        if len(names) > 1:
            raise ToolFailed(f"the body is encoded {len(names)} times over ({encoding[:100]})")
        self.max_bytes = max_bytes
        self.data = bytearray()
        self._zlib: Any = None
        self._raw_deflate = False
        if names:
            if names[0] in ("gzip", "x-gzip"):
                self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
            elif names[0] == "deflate":
                self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
                self._raw_deflate = True  # servers send raw deflate too: tried on error
            else:
                raise ToolFailed(
                    f"the body is encoded as {names[0][:50]!r}, which is not taken "
                    "(gzip or deflate only)"
                )

    def feed(self, chunk: bytes) -> None:
        if self._zlib is None:
            self._add(chunk)
            return
        if self._zlib.eof:
            # Bytes past the compressed stream's end: zlib would keep them all (as
            # ``unused_data``, copied again with each read). No use is made of them.
            if chunk.strip():
                raise ToolFailed("the body goes on past the end of its compressed data")
            return
        pending = chunk
        while pending:
            try:
                out = self._zlib.decompress(pending, _PIECE)
            except zlib.error as exc:
                if self._raw_deflate and not self.data:
                    self._raw_deflate = False
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise ToolFailed(f"the body could not be decompressed: {exc}") from None
            self._raw_deflate = False
            self._add(out)
            pending = self._zlib.unconsumed_tail

    def _add(self, data: bytes) -> None:
        self.data.extend(data)
        if len(self.data) > self.max_bytes:
            raise ToolFailed(f"response larger than the {self.max_bytes}-byte limit")


def _kind(ip: IPAddress) -> str:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    return "non-public"


def _public(ip: IPAddress) -> bool:
    # Site-local IPv6 (fec0::/10, deprecated, still routed inside some networks) counts
    # as global to Python's ``ipaddress``; so does a network's own NAT64 prefix, whose IPv4
    # address cannot be told (``LOCAL_NAT64``).
    odd = isinstance(ip, ipaddress.IPv6Address) and (ip.is_site_local or ip in LOCAL_NAT64)
    return ip.is_global and not ip.is_multicast and not odd


@dataclass(frozen=True)
class FetchPolicy:
    """The parsed allowlist: which URLs may be requested, which addresses reached."""

    entries: tuple[AllowEntry, ...]

    @classmethod
    def parse(cls, allow: str | Iterable[str]) -> FetchPolicy:
        return cls(parse_allowlist(allow))

    def check_url(self, url: httpx.URL) -> tuple[str, int]:
        """(host, port) of a URL the allowlist names by host and port; ToolFailed if not."""
        scheme = url.scheme
        try:
            url_host = url.host
        except UnicodeError as exc:  # a name IDNA refuses (``xn--a.com``)
            raise ToolFailed(f"not a valid host name in {str(url)[:200]!r}: {exc}") from None
        if scheme not in DEFAULT_PORTS or not url_host:
            raise ToolFailed(
                f"only http(s) URLs with a host can be fetched, not {str(url)[:200]!r}"
            )
        if url.userinfo:
            raise ToolFailed("URLs with a user name or password are refused")
        host = url_host.rstrip(".").lower()
        address = canonical_address(host)
        if address is not None:
            host = str(address)
        port = url.port or DEFAULT_PORTS[scheme]
        named = [e for e in self.entries if e.host in (host, "*")]
        if not any(e.permits_port(port, scheme) for e in named):
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            default = DEFAULT_PORTS[scheme]
            hint = (
                f"; an entry without a port allows port {default} only"
                if any(e.port is None for e in named)
                else ""
            )
            raise ToolFailed(f"{shown} is not on the allowlist (VIGIL_HTTP_ALLOW){hint}")
        return host, port

    def address_error(self, host: str, address: str, port: int, scheme: str) -> str | None:
        """None when a connection to ``address`` (which ``host`` resolved to) may be made."""
        ip = canonical_address(address.split("%", 1)[0])
        if ip is None:
            return f"{host} resolved to {address!r}, which is not an address"
        ip = unmapped(ip)
        if _public(ip):
            return None
        for e in self.entries:
            named = e.address is not None and unmapped(e.address) == ip
            if named and e.permits_port(port, scheme):
                return None
        entry = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        return (
            f"{host} resolves to {ip}, a {_kind(ip)} address that no allowlist entry names "
            f"(VIGIL_HTTP_ALLOW would need {entry})"
        )


async def system_resolve(host: str) -> list[str]:
    """The addresses of ``host``, as the system resolver gives them (once per request)."""
    try:
        return await resolve_host(host)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolFailed(f"could not resolve {host}: {exc}") from exc


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks every request against the policy and connects to a checked address only."""

    def __init__(self, policy: FetchPolicy, resolve: Resolver, pools: HostTransports) -> None:
        self.policy = policy
        self.resolve = resolve
        self.pools = pools

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host, port = self.policy.check_url(url)
        addresses = [host] if canonical_address(host) is not None else await self.resolve(host)
        permitted: list[str] = []
        refusals: list[str] = []
        for address in addresses:
            why = self.policy.address_error(host, address, port, url.scheme)
            if why is None:
                permitted.append(address)
            else:
                refusals.append(why)
        if not permitted:
            raise ToolFailed(refusals[0] if refusals else f"{host} resolved to no address")
        return await send_pinned(self.pools, request, host, permitted)

    async def aclose(self) -> None:
        await self.pools.aclose()


@dataclass(frozen=True)
class Fetched:
    url: str
    """Where the body came from (after redirects)."""
    status: int
    content_type: str
    body: bytes
    redirects: int = 0


def checked_url(url: str, policy: FetchPolicy) -> httpx.URL:
    """``url`` parsed and on ``policy``'s allowlist; ToolFailed saying why not."""
    parsed, refused = _verdict(url, policy)
    if parsed is None:
        raise ToolFailed(refused)
    return parsed


@functools.lru_cache(maxsize=256)
def _verdict(url: str, policy: FetchPolicy) -> tuple[httpx.URL | None, str]:
    """``checked_url``'s answer, kept: a folded call's URL is checked when the call is
    found to change nothing and again when it runs, and a session often fetches one URL
    again and again."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return None, f"not a valid URL: {exc}"
    try:
        policy.check_url(parsed)
    except ToolFailed as exc:
        return None, str(exc)
    return parsed, ""


async def fetch_url(
    url: str,
    policy: FetchPolicy,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 - handed to httpx
    resolve: Resolver = system_resolve,
    max_redirects: int = MAX_REDIRECTS,
) -> Fetched:
    """GET ``url`` under ``policy``, following checked redirects; ToolFailed on refusal.
    ``timeout`` bounds the whole fetch, redirects and body included (given to httpx alone
    it bounds each read: a server sending a byte a second held a call for minutes)."""
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(url, policy, max_bytes, timeout, resolve, max_redirects)
    except TimeoutError:
        raise ToolFailed(
            f"timed out fetching {url[:200]}: no whole answer within {timeout:g}s"
        ) from None


async def _fetch(
    url: str,
    policy: FetchPolicy,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 - handed to httpx
    resolve: Resolver,
    max_redirects: int,
) -> Fetched:
    current = checked_url(url, policy)  # the cheap refusal first, before any connection
    # No proxies from the environment: the connection must go to the checked address.
    pools = HostTransports(lambda: httpx.AsyncHTTPTransport(trust_env=False))
    transport = GuardedTransport(policy, resolve, pools)
    async with httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        for hop in range(max_redirects + 1):
            try:
                headers = {"Accept-Encoding": ACCEPT_ENCODING}
                async with client.stream("GET", current, headers=headers) as resp:
                    if resp.is_redirect:
                        if hop == max_redirects:
                            raise ToolFailed(f"stopped after {max_redirects} redirects")
                        current = current.join(resp.headers["location"])
                        continue
                    body = _Body(resp.headers.get("content-encoding", ""), max_bytes)
                    async for chunk in resp.aiter_raw():
                        body.feed(chunk)
                    ctype = resp.headers.get("content-type", "application/octet-stream")
                    return Fetched(str(current), resp.status_code, ctype, bytes(body.data), hop)
            except ToolFailed as exc:
                if hop == 0:
                    raise
                raise ToolFailed(f"redirect to {str(current)[:200]} refused: {exc}") from exc
            except httpx.InvalidURL as exc:
                raise ToolFailed(f"redirect to an invalid URL: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise ToolFailed(f"timed out fetching {current}") from exc
            except httpx.HTTPError as exc:
                raise ToolFailed(
                    f"could not fetch {current}: {exc.__class__.__name__}: {exc}"
                ) from exc
    raise ToolFailed(f"stopped after {max_redirects} redirects")  # not reached


@functools.lru_cache(maxsize=16)
def _policy(allow: tuple[str, ...]) -> FetchPolicy:
    try:
        return FetchPolicy.parse(allow)
    except ValueError as exc:  # Settings validates it; a hand-built one may not be
        raise ToolFailed(str(exc)) from exc


def refusal(settings: ActivitySettings, args: dict[str, Any]) -> str | None:
    """The error a call would get before any connection is made (a URL that is not
    http(s), or off the allowlist), or None: decided by the arguments and settings alone.
    """
    try:
        checked_url(str(args["url"]), _policy(tuple(settings.http_allowlist)))
    except ToolFailed as exc:
        return str(exc)
    return None


async def http_fetch(ctx: BuiltinContext, args: dict[str, Any]) -> ToolOutcome:
    """The tool: the page's status, type, size and text."""
    policy = _policy(tuple(ctx.settings.http_allowlist))
    got = await fetch_url(
        str(args["url"]),
        policy,
        max_bytes=ctx.settings.http_max_bytes,
        timeout=ctx.settings.http_timeout_seconds,
    )
    text = got.body.decode("utf-8", errors="replace")
    via = f" (after {got.redirects} redirect(s), from {got.url})" if got.redirects else ""
    return ToolOutcome(
        f"HTTP {got.status} {got.content_type}, {len(got.body)} bytes{via}\n\n{text}",
        {"status": got.status, "content_type": got.content_type, "bytes": len(got.body)},
    )
