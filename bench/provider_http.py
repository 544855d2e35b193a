"""The model call's HTTP cost in this process: vigil's provider client against httpx.

One streamed chat completion (the way a step calls its model) to the LLM stub running in
a process of its own, as a provider runs elsewhere: a 40-message request of ~16 KB, a
tool-call reply. Rounds alternate between

- ``vigil``: ``OpenAIChatProvider.stream`` as shipped (request built, events parsed, the
  reply assembled), on the provider client of ``activities/models/http.py``;
- ``httpx``: the same request body posted through an ``httpx.AsyncClient`` and its event
  stream split into events the same way (``SseLines``), nothing parsed: the transport
  alone, the client vigil's providers used before;

and print this process's CPU and the wall time per call (median of the rounds). Prints
figures; asserts nothing.

    uv run python -m bench.provider_http [--calls 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from tests.support.llm_stub import StubProcess
from vigil.activities.models.base import ChatMessage, SseLines, ToolSpec
from vigil.activities.models.openai_compat import OpenAIChatProvider

MESSAGES = [ChatMessage("system", "You are a careful operator. " * 8)] + [
    ChatMessage("user" if i % 2 else "assistant", f"message {i}: " + "words of a turn " * 20)
    for i in range(40)
]
TOOLS = [ToolSpec("http_fetch", "Fetch a URL", {"type": "object", "properties": {}})]


async def _per_call(call: Callable[[], Awaitable[None]], calls: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per call over ``calls`` calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    return (
        (time.process_time() - cpu) / calls * 1000.0,
        (time.perf_counter() - wall) / calls * 1000.0,
    )


async def bench(port: int, calls: int, rounds: int) -> None:
    base = f"http://127.0.0.1:{port}/v1"
    provider = OpenAIChatProvider(base, "stub-model", "sk-bench", 30.0)
    payload, headers, _ = provider._request(MESSAGES, TOOLS, None, None)
    payload["stream"] = True
    payload["stream_options"] = {"include_usage": True}
    other = httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=False)

    async def ignore(_delta: str) -> None:
        return None

    async def vigil() -> None:
        await provider.stream(MESSAGES, TOOLS, on_delta=ignore)

    async def plain() -> None:
        async with other.stream(
            "POST", f"{base}/chat/completions", json=payload, headers=headers
        ) as response:
            lines = SseLines()
            async for chunk in response.aiter_text():
                lines.feed(chunk)

    results: dict[str, list[tuple[float, float]]] = {"vigil": [], "httpx": []}
    for call in (vigil, plain):
        await _per_call(call, 50)  # warm: connection open, code paths hot
    for _ in range(rounds):
        for name, call in (("vigil", vigil), ("httpx", plain)):
            results[name].append(await _per_call(call, calls))
    await provider.aclose()
    await other.aclose()

    size = len(json.dumps(payload))
    print(f"one streamed chat completion, {size:,} bytes sent, stub in its own process")
    print(f"{calls} calls x {rounds} rounds, alternating; median of the rounds (min-max)")
    for name, label in (("vigil", "vigil provider"), ("httpx", "httpx, transport only")):
        cpu = [r[0] for r in results[name]]
        wall = [r[1] for r in results[name]]
        print(
            f"  {label:<22} CPU {statistics.median(cpu):5.2f} ms/call "
            f"({min(cpu):.2f}-{max(cpu):.2f})   wall {statistics.median(wall):5.2f} ms/call "
            f"({min(wall):.2f}-{max(wall):.2f})"
        )
    ratio = statistics.median(r[0] for r in results["vigil"]) / statistics.median(
        r[0] for r in results["httpx"]
    )
    print(f"  vigil / httpx CPU per call: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with StubProcess() as stub:
        asyncio.run(bench(stub.port, args.calls, args.rounds))


if __name__ == "__main__":
    main()
