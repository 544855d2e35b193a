"""`http_fetch` reaches only what the allowlist names: host and port, checked on the
address each connection goes to (issue 9, defect 4).

With `127.0.0.1` allowed, an agent once fetched another service on another port of the
same host. Real HTTP servers on loopback stand for "the allowed service" and "another
service": every trick (other ports, names resolving to loopback, other spellings of an
address, credentials in the URL, IPv6, redirects, a name that re-resolves) must leave
the other service untouched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from vigil.activities.tools import registry
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@dataclass
class Service:
    """A real HTTP server on loopback that records what reached it."""

    name: str
    host: str
    port: int = 0
    hits: list[str] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)
    """path -> Location: answered with 302."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def entry(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@contextlib.contextmanager
def serving(name: str, host: str = "127.0.0.1") -> Iterator[Service]:
    service = Service(name, host)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            service.hits.append(self.path)
            target = service.redirects.get(self.path)
            if target is not None:
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = f"this is {service.name}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, 0), Handler)
    service.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()


def _ctx(allow: str) -> registry.BuiltinContext:
    settings = Settings(http_allow=allow, http_timeout_seconds=5)  # type: ignore[call-arg]
    return registry.BuiltinContext(
        session_id="s",
        agent_id="a",
        step=1,
        settings=settings,
        store=None,  # type: ignore[arg-type]  # http_fetch touches neither
        sessionmaker=None,  # type: ignore[arg-type]
        http=httpx.AsyncClient(),
    )


async def fetch(allow: str, url: str) -> str:
    """The tool's text, or its refusal as ``refused: ...``."""
    try:
        return (await registry.IMPLEMENTATIONS["http_fetch"](_ctx(allow), {"url": url})).text
    except registry.ToolFailed as exc:
        return f"refused: {exc}"


@pytest.fixture
def allowed() -> Iterator[Service]:
    with serving("the allowed service") as s:
        yield s


@pytest.fixture
def other() -> Iterator[Service]:
    with serving("another service") as s:
        yield s


async def test_a_port_less_entry_does_not_open_every_port(allowed: Service, other: Service) -> None:
    # The defect: `127.0.0.1` allowed, another service on another port answered.
    got = await fetch("127.0.0.1", f"{other.url}/api/v1/namespaces/default/workflows")
    assert got.startswith("refused:"), got
    assert "port" in got
    assert other.hits == []


async def test_an_entry_with_a_port_opens_that_port_only(allowed: Service, other: Service) -> None:
    assert "this is the allowed service" in await fetch(allowed.entry, f"{allowed.url}/x")
    got = await fetch(allowed.entry, f"{other.url}/x")
    assert got.startswith("refused:") and str(other.port) in got, got
    assert allowed.hits == ["/x"] and other.hits == []


async def test_a_name_that_resolves_to_loopback_needs_the_address_named(
    allowed: Service, other: Service
) -> None:
    by_name = f"http://localhost:{allowed.port}/n"
    got = await fetch(f"localhost:{allowed.port}", by_name)
    assert got.startswith("refused:") and "127.0.0.1" in got and "loopback" in got, got
    named = f"localhost:{allowed.port},127.0.0.1:{allowed.port},[::1]:{allowed.port}"
    assert "this is the allowed service" in await fetch(named, by_name)
    # `*` means any public host: loopback stays closed, whatever the name.
    assert (await fetch("*", f"http://localhost:{other.port}/")).startswith("refused:")
    assert (await fetch("*", "http://localhost/")).startswith("refused:")
    assert other.hits == []


@pytest.mark.parametrize(
    "spelling", ["2130706433", "0x7f000001", "0x7f.0.0.1", "127.1", "0177.0.0.1"]
)
async def test_other_spellings_of_loopback_are_refused(other: Service, spelling: str) -> None:
    """Not addresses but names (the resolver reads them as 127.0.0.1): even an entry
    with that very spelling does not name the loopback address."""
    url = f"http://{spelling}:{other.port}/"
    for allow in (f"127.0.0.1:{other.port}", "*", f"{spelling}:{other.port}"):
        got = await fetch(allow, url)
        assert got.startswith("refused:"), (allow, got)
    assert other.hits == []


async def test_ipv4_mapped_loopback_is_loopback(other: Service) -> None:
    url = f"http://[::ffff:127.0.0.1]:{other.port}/"
    for allow in (f"127.0.0.1:{other.port}", "*", f"[::ffff:127.0.0.1]:{other.port + 1}"):
        got = await fetch(allow, url)
        assert got.startswith("refused:"), (allow, got)
    assert other.hits == []


@pytest.mark.parametrize(
    "template",
    [
        "http://{a}@{b}/",
        "http://user:pass@{b}/",
        "http://{b}#@{a}/",
        "http://{b}\\@{a}/",
        "http://{a}\\@{b}/",
        "http://{b}%2f@{a}/",
    ],
)
async def test_userinfo_tricks(allowed: Service, other: Service, template: str) -> None:
    url = template.format(a=allowed.entry, b=other.entry)
    got = await fetch(allowed.entry, url)
    assert other.hits == [], (url, got)


async def test_ipv6_loopback() -> None:
    with serving("a v6 service", "::1") as v6:
        assert (await fetch(f"127.0.0.1:{v6.port}", f"{v6.url}/")).startswith("refused:")
        assert (await fetch("::1", f"{v6.url}/")).startswith("refused:")
        assert (await fetch("*", f"{v6.url}/")).startswith("refused:")
        assert v6.hits == []
        assert "this is a v6 service" in await fetch(v6.entry, f"{v6.url}/six")
        assert v6.hits == ["/six"]


async def test_redirects_are_checked_like_the_first_request(
    allowed: Service, other: Service
) -> None:
    with serving("a redirector") as hop:
        hop.redirects = {
            "/to-allowed": f"{allowed.url}/landed",
            "/to-other": f"{other.url}/stolen",
            "/to-other-by-name": f"http://localhost:{other.port}/stolen",
            "/loop": "/loop",
        }
        allow = f"{hop.entry},{allowed.entry}"
        assert "this is the allowed service" in await fetch(allow, f"{hop.url}/to-allowed")
        for path in ("/to-other", "/to-other-by-name"):
            got = await fetch(allow, f"{hop.url}{path}")
            assert got.startswith("refused:") and "redirect" in got, got
        assert (await fetch(allow, f"{hop.url}/loop")).startswith("refused:")
    assert allowed.hits == ["/landed"] and other.hits == []


async def test_each_connection_checks_the_address_it_goes_to(allowed: Service) -> None:
    """A name that first resolves to an allowed address and then elsewhere (DNS
    rebinding) is refused the second time; the connection goes to the checked address,
    never to a second lookup of the name."""
    from vigil.activities.tools.http_fetch import FetchPolicy, fetch_url

    answers = iter([["127.0.0.1"], ["127.0.0.2"]])

    async def rebinding(host: str) -> list[str]:
        assert host == "rebind.test"
        return next(answers)

    policy = FetchPolicy.parse(f"rebind.test:{allowed.port},127.0.0.1:{allowed.port}")
    url = f"http://rebind.test:{allowed.port}/first"
    first = await fetch_url(url, policy, max_bytes=10_000, timeout=5, resolve=rebinding)
    assert first.status == 200 and first.body == b"this is the allowed service"
    with pytest.raises(registry.ToolFailed, match=r"127\.0\.0\.2"):
        await fetch_url(url, policy, max_bytes=10_000, timeout=5, resolve=rebinding)
    assert allowed.hits == ["/first"]


def test_a_bad_allowlist_entry_is_a_configuration_error() -> None:
    for bad in ("example.com:http", "example.com:0", "example.com:70000", "http://x.org", "[::1"):
        with pytest.raises(ValueError, match="VIGIL_HTTP_ALLOW"):
            Settings(http_allow=bad)  # type: ignore[call-arg]


async def test_the_time_limit_bounds_the_whole_fetch() -> None:
    """A server that sends a byte at a time, each within the limit, held a call for as
    long as it pleased (the limit bounded each read): minutes, the model call's retries
    spent on it."""
    from vigil.activities.tools.http_fetch import FetchPolicy, fetch_url

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        policy = FetchPolicy.parse(f"127.0.0.1:{port}")
        with pytest.raises(registry.ToolFailed, match=r"no whole answer within 1s"):
            await fetch_url(f"http://127.0.0.1:{port}/slow", policy, max_bytes=1000, timeout=1)
    finally:
        server.shutdown()
        server.server_close()
