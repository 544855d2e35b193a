"""A webhook's POST goes to the address its host was checked at, never to a second lookup.

The delivery used to resolve the host to check it, then let the HTTP client resolve it
again to connect: a name that answers a receiver's address to the first lookup and cloud
metadata's to the second (DNS rebinding) had its POST, signed body and all, sent where no
webhook may go. Here a resolver stands in for DNS (the real receiver listens on loopback;
an ``.invalid`` name never resolves through the system's)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.webhook_receiver import webhook_receiver
from vigil.activities.hooks.urls import WebhookRefused, webhook_client
from vigil.activities.pinned import MAX_HOSTS, HostTransports, send_pinned


class Rebinding:
    """A name server that answers each lookup from ``answers`` in turn (the last again)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


async def test_the_post_goes_to_the_address_that_was_checked() -> None:
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/", 1)[0]
        dns = Rebinding(["127.0.0.1"], ["169.254.169.254"])
        async with webhook_client(dns) as http:
            answer = await http.post(f"http://hooks.invalid:{port}/hook", content=b"{}")
        assert answer.status_code == 200
        assert dns.asked == ["hooks.invalid"], "one lookup, checked and connected to"
        (got,) = receiver.delivered()
        assert got.headers["host"] == f"hooks.invalid:{port}", "the Host stays the name's"


@pytest.mark.parametrize(
    "addresses",
    [
        ["169.254.169.254"],
        ["127.0.0.1", "169.254.169.254"],
        ["fe80::1"],
        ["::ffff:169.254.169.254"],
    ],
)
async def test_a_name_with_an_address_no_webhook_goes_to_is_refused_before_connecting(
    addresses: list[str],
) -> None:
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/", 1)[0]
        async with webhook_client(Rebinding(addresses)) as http:
            with pytest.raises(WebhookRefused) as refused:
                await http.post(f"http://hooks.invalid:{port}/hook", content=b"{}")
        assert "hooks.invalid resolves to" in str(refused.value)
        assert "no webhook is sent there" in str(refused.value)
        assert receiver.requests == []


async def test_a_name_that_does_not_resolve_is_a_connect_error_to_retry() -> None:
    async def nowhere(host: str) -> list[str]:
        raise OSError(f"no address for {host}")

    async with webhook_client(nowhere) as http:
        with pytest.raises(httpx.ConnectError, match=r"could not resolve hooks\.invalid"):
            await http.post("http://hooks.invalid/hook", content=b"{}")


async def test_a_proxy_of_the_environment_carries_the_post_and_no_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pinned client left the environment's proxy out (httpx reads no proxy variable
    for a client given its own transport): where the proxy is the only way out, every
    delivery failed. The receiver here plays the proxy: it gets the absolute URL."""
    with webhook_receiver() as proxy:
        origin = proxy.url.rsplit("/", 1)[0]
        monkeypatch.setenv("HTTP_PROXY", origin)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        dns = Rebinding(["169.254.169.254"])
        async with webhook_client(dns) as http:
            answer = await http.post("http://hooks.invalid/hook", content=b"{}")
        assert answer.status_code == 200
        (got,) = proxy.delivered()
        assert got.path == "http://hooks.invalid/hook"
        assert dns.asked == [], "the proxy resolves the name"
        # A host NO_PROXY names is connected to directly, at a checked address.
        monkeypatch.setenv("NO_PROXY", "hooks.invalid")
        async with webhook_client(dns) as http:
            with pytest.raises(WebhookRefused):
                await http.post("http://hooks.invalid/hook", content=b"{}")
        assert dns.asked == ["hooks.invalid"]


async def test_each_host_name_has_its_own_connections() -> None:
    """Pinned requests go to an address, and were pooled by it: a kept-alive TLS
    connection made for one name (its certificate checked against it) carried the
    requests of another name at the same address."""
    made: list[object] = []

    def make() -> httpx.AsyncBaseTransport:
        made.append(transport := httpx.AsyncHTTPTransport())
        return transport

    pools = HostTransports(make)
    first = await pools.take("a.example")
    await pools.give_back(first)
    assert await pools.take("a.example") is first
    await pools.give_back(first)
    assert await pools.take("b.example") is not first
    for n in range(MAX_HOSTS):
        await pools.take(f"h{n}.example")
    assert len(made) == 2 + MAX_HOSTS
    assert await pools.take("a.example") is not first, "the least recently used was closed"
    await pools.aclose()


async def test_a_pool_put_out_by_newer_hosts_serves_the_response_it_is_reading() -> None:
    """The least recently used host's pool was closed as soon as a 65th host came, with
    a response still being read from it (a slow webhook receiver's answer, while
    deliveries to other hosts went on): that read then failed."""
    go_on = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
        await writer.drain()
        await go_on.wait()
        writer.write(b" half")
        await writer.drain()
        writer.close()

    class Closing(httpx.AsyncHTTPTransport):
        closed = False

        async def aclose(self) -> None:
            self.closed = True
            await super().aclose()

    made: list[Closing] = []

    def make() -> httpx.AsyncBaseTransport:
        made.append(transport := Closing())
        return transport

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pools = HostTransports(make)
    try:
        request = httpx.Request("GET", f"http://slow.invalid:{port}/")
        response = await send_pinned(pools, request, "slow.invalid", ["127.0.0.1"])
        for n in range(MAX_HOSTS):  # each takes a pool and gives it back at once
            await pools.give_back(await pools.take(f"h{n}.example"))
        assert not made[0].closed, "closed under the response being read"
        go_on.set()
        body = await response.aread()  # read to its end, the response is closed
        assert body == b"first half"
        assert made[0].closed, "closed once its response was"
        assert not any(t.closed for t in made[1:])
    finally:
        await pools.aclose()
        server.close()
        await server.wait_closed()
