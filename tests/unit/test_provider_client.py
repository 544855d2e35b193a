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


async def _call(monkeypatch: pytest.MonkeyPatch, base_url: str, **env: str) -> str:
    """One call of a provider at ``base_url`` with ``env`` set (no other proxy set)."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    provider = OpenAIChatProvider(base_url, "m", "k", 5.0)
    try:
        reply = await provider.complete([ChatMessage("user", "hello")], [])
    finally:
        await provider.aclose()
    return reply.content


@pytest.mark.parametrize("scheme", ["http://", ""], ids=["url", "host-port"])
async def test_a_proxy_named_by_the_environment_carries_the_call(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    # ``host:port`` without a scheme is an HTTP proxy, as curl reads it.
    seen: list[str] = []
    async with forward_proxy(seen) as proxy:
        named = scheme + proxy.removeprefix("http://")
        content = await _call(monkeypatch, "http://models.invalid/v1", HTTP_PROXY=named)
    assert content == "hi"
    assert seen == ["POST http://models.invalid/v1/chat/completions HTTP/1.1"]


@pytest.mark.parametrize("with_port", [False, True], ids=["host", "host-port"])
async def test_no_proxy_sends_the_call_straight_to_the_host(
    monkeypatch: pytest.MonkeyPatch, with_port: bool
) -> None:
    seen: list[str] = []
    async with forward_proxy(seen) as proxy, forward_proxy([]) as direct:
        bypass = direct.removeprefix("http://") if with_port else "127.0.0.1"
        content = await _call(monkeypatch, f"{direct}/v1", HTTP_PROXY=proxy, NO_PROXY=bypass)
    assert content == "hi"
    assert seen == []  # the proxy never saw it


async def test_a_proxy_that_is_not_http_is_refused_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ProviderError) as caught:
        await _call(monkeypatch, "http://models.invalid/v1", ALL_PROXY="socks5://127.0.0.1:1080")
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
