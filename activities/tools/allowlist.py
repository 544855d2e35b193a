"""The `http_fetch` allowlist, parsed: ``VIGIL_HTTP_ALLOW`` entries of host and port.

Kept apart from the tool (which needs httpx) so that checking the setting, which every
`vigil` command does when it reads its settings, costs no HTTP client import. The rules
are in the tool's documentation (activities/tools/http_fetch.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vigil.schema.hooks import embedded_ipv4

DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AllowEntry:
    host: str
    """A lower-case name without trailing dot, an address in canonical form, or ``*``."""
    port: int | None
    """None: the scheme's default port only."""
    address: IPAddress | None = None
    """Set when ``host`` is an address."""

    def permits_port(self, port: int, scheme: str) -> bool:
        return port == (self.port if self.port is not None else DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def canonical_address(text: str) -> IPAddress | None:
    """The address ``text`` spells in canonical form (dotted quad, IPv6), else None: other
    spellings (``2130706433``, ``0x7f000001``, ``127.1``) are names, never addresses."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def unmapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries and reaches (mapped, 6to4, NAT64, the old
    compatible form), else ``ip``: each spelling of 127.0.0.1 is checked as 127.0.0.1."""
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
        return inner
    return ip


def parse_entry(raw: str) -> AllowEntry:
    """One allowlist entry; ValueError saying what is wrong."""
    text = raw.strip().lower()

    def bad(why: str) -> ValueError:
        return ValueError(f"bad VIGIL_HTTP_ALLOW entry {raw.strip()!r}: {why}")

    if not text or any(ch in text for ch in "/@?#\\ \t"):
        raise bad("write host or host:port (no scheme, path or credentials)")
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise bad("missing ]")
        if rest:
            if not rest.startswith(":"):
                raise bad("expected :port after ]")
            port = _port(rest[1:], bad)
    elif text.count(":") > 1:  # a bare IPv6 address, no port
        host = text
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        port = _port(port_text, bad)
    else:
        host = text
    host = host.rstrip(".")
    if not host:
        raise bad("no host")
    address = canonical_address(host)
    if text.startswith("[") and not isinstance(address, ipaddress.IPv6Address):
        raise bad("brackets hold an IPv6 address")
    if address is None and ":" in host:
        raise bad("not an IPv6 address")
    return AllowEntry(str(address) if address is not None else host, port, address)


def _port(text: str, bad: Callable[[str], ValueError]) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise bad(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_allowlist(allow: str | Iterable[str]) -> tuple[AllowEntry, ...]:
    """Every entry of an allowlist (comma-separated text or items); ValueError naming the
    first bad one."""
    items = allow.split(",") if isinstance(allow, str) else allow
    return tuple(parse_entry(item) for item in items if item.strip())
