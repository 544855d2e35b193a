"""The http_fetch allowlist's rules, without a network: entries, ports, addresses."""

from __future__ import annotations

import httpx
import pytest

from vigil.activities.tools.allowlist import parse_entry
from vigil.activities.tools.base import ToolFailed
from vigil.activities.tools.http_fetch import FetchPolicy


@pytest.mark.parametrize(
    ("raw", "shown", "port"),
    [
        ("Example.COM", "example.com", None),
        ("example.com.", "example.com", None),
        ("example.com:8080", "example.com:8080", 8080),
        ("127.0.0.1:9", "127.0.0.1:9", 9),
        ("[::1]:8233", "[::1]:8233", 8233),
        ("[0:0::1]", "[::1]", None),
        ("::1", "[::1]", None),
        ("*", "*", None),
        ("*:8443", "*:8443", 8443),
    ],
)
def test_entries(raw: str, shown: str, port: int | None) -> None:
    entry = parse_entry(raw)
    assert (str(entry), entry.port) == (shown, port)


@pytest.mark.parametrize(
    "raw",
    [
        "http://example.com",
        "user@example.com",
        "example.com:",
        "example.com:80x",
        "[::1",
        "[x]:80",
        "example.com/path",
        "a:b:c:d:z",
        "example.com:65536",
    ],
)
def test_bad_entries(raw: str) -> None:
    with pytest.raises(ValueError, match="bad VIGIL_HTTP_ALLOW entry"):
        parse_entry(raw)


def _url_ok(allow: str, url: str) -> bool:
    try:
        FetchPolicy.parse(allow).check_url(httpx.URL(url))
    except ToolFailed:
        return False
    return True


@pytest.mark.parametrize(
    ("allow", "url", "ok"),
    [
        ("example.com", "http://example.com/", True),
        ("example.com", "https://example.com/", True),
        ("example.com", "http://example.com:443/", False),  # 443 is https's default, not http's
        ("example.com", "http://example.com:8080/", False),
        ("example.com:8080", "http://example.com:8080/", True),
        ("example.com:8080", "http://example.com/", False),
        ("example.com", "http://EXAMPLE.com./x", True),
        ("example.com", "http://www.example.com/", False),
        ("*", "https://anything.example/", True),
        ("*", "https://anything.example:8443/", False),
        ("*:8443", "https://anything.example:8443/", True),
        ("example.com", "http://user:pw@example.com/", False),
        ("example.com", "ftp://example.com/", False),
        ("example.com", "file:///etc/passwd", False),
        ("127.0.0.1:80", "http://127.0.0.1/", True),
        ("[::1]:81", "http://[0::1]:81/", True),
    ],
)
def test_urls(allow: str, url: str, ok: bool) -> None:
    assert _url_ok(allow, url) is ok


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "private"),
        ("100.64.0.1", "non-public"),
        ("224.0.0.1", "non-public"),
        # An IPv4 address inside an IPv6 one reaches that IPv4 address (through a NAT64
        # gateway, a 6to4 relay, or as the old compatible form): each was taken as public.
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("::127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
        ("2002:c0a8:101::1", "private"),
        # A network's own NAT64 prefix, the IPv4-translated form, and site-local IPv6.
        ("64:ff9b:1::a9fe:a9fe", "non-public"),
        ("64:ff9b:1:a9fe:a9:fe00:808:808", "non-public"),  # 169.254.169.254 in a /56's middle
        ("::ffff:0:7f00:1", "loopback"),
        ("fec0::1", "non-public"),
    ],
)
def test_non_public_addresses_need_an_entry(address: str, kind: str) -> None:
    policy = FetchPolicy.parse("*,example.com")
    why = policy.address_error("example.com", address, 80, "http")
    assert why is not None and kind in why, why


def test_a_named_address_and_port_open_it_and_nothing_else() -> None:
    policy = FetchPolicy.parse("intranet.example:8080,10.0.0.5:8080")
    assert policy.address_error("intranet.example", "10.0.0.5", 8080, "http") is None
    assert policy.address_error("intranet.example", "10.0.0.6", 8080, "http") is not None
    assert policy.address_error("intranet.example", "10.0.0.5", 8081, "http") is not None


def test_public_addresses_pass() -> None:
    policy = FetchPolicy.parse("example.com")
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert policy.address_error("example.com", address, 80, "http") is None
