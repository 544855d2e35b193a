"""The providers' HTTP client: the environment's proxy, and what it sends (against real
servers on loopback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from vigil.activities.models.base import ChatMessage, ProviderError
from vigil.activities.models.openai_compat import OpenAIChatProvider

REPLY = {
    "id": "c1",
    "object": "chat.completion",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


@asynccontextmanager
async def forward_proxy(seen: list[str]) -> AsyncIterator[str]:
    """An HTTP forward proxy that answers every request itself with one chat completion,
    noting each request line (a proxy is sent the absolute URL)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().strip()
        length = 0
        while (header := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        seen.append(line)
        body = json.dumps(REPLY).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_proxy_named_by_the_environment_carries_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    async with forward_proxy(seen) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        provider = OpenAIChatProvider("http://models.invalid/v1", "m", "k", 5.0)
        reply = await provider.complete([ChatMessage("user", "hello")], [])
        await provider.aclose()
    assert reply.content == "hi"
    assert seen == ["POST http://models.invalid/v1/chat/completions HTTP/1.1"]


async def test_no_proxy_sends_the_call_straight_to_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    async with forward_proxy(seen) as proxy, forward_proxy([]) as direct:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        provider = OpenAIChatProvider(f"{direct}/v1", "m", "k", 5.0)
        reply = await provider.complete([ChatMessage("user", "hello")], [])
        await provider.aclose()
    assert reply.content == "hi"
    assert seen == []  # the proxy never saw it


async def test_a_proxy_named_without_a_scheme_is_an_http_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    async with forward_proxy(seen) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.removeprefix("http://"))  # host:port
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        provider = OpenAIChatProvider("http://models.invalid/v1", "m", "k", 5.0)
        reply = await provider.complete([ChatMessage("user", "hello")], [])
        await provider.aclose()
    assert reply.content == "hi"
    assert seen == ["POST http://models.invalid/v1/chat/completions HTTP/1.1"]


async def test_no_proxy_with_a_port_matches_the_host_and_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    async with forward_proxy(seen) as proxy, forward_proxy([]) as direct:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", direct.removeprefix("http://"))  # 127.0.0.1:port
        provider = OpenAIChatProvider(f"{direct}/v1", "m", "k", 5.0)
        reply = await provider.complete([ChatMessage("user", "hello")], [])
        await provider.aclose()
    assert reply.content == "hi"
    assert seen == []


async def test_a_proxy_that_is_not_http_is_refused_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    provider = OpenAIChatProvider("http://models.invalid/v1", "m", "k", 5.0)
    with pytest.raises(ProviderError) as caught:
        await provider.complete([ChatMessage("user", "hello")], [])
    await provider.aclose()
    assert not caught.value.retryable
    assert "not an HTTP proxy" in caught.value.message


@pytest.mark.parametrize(
    "url", ["ftp://models.example/v1", "htps://models.example/v1", "http://[::1/v1"]
)
async def test_a_url_no_request_can_go_to_is_not_retried(url: str) -> None:
    provider = OpenAIChatProvider(url, "m", "k", 5.0)
    with pytest.raises(ProviderError) as caught:
        await provider.complete([ChatMessage("user", "hello")], [])
    await provider.aclose()
    assert not caught.value.retryable, caught.value
    assert caught.value.message.startswith("bad provider URL"), caught.value.message
