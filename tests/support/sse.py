"""A small Server-Sent Events reader over httpx, for tests and the benchmark."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: Any
    """The parsed JSON data."""
    id: str | None
    received: float = field(default=0.0, compare=False)
    """``time.perf_counter()`` when it arrived."""


@dataclass
class SseRead:
    events: list[SseEvent]
    comments: int
    """Comment lines (heartbeats) seen."""

    def of(self, *kinds: str) -> list[SseEvent]:
        return [e for e in self.events if e.event in kinds]


async def read_sse(
    client: httpx.AsyncClient,
    path: str,
    *,
    last_event_id: str | None = None,
    until: Callable[[list[SseEvent]], bool] | None = None,
    within: float = 60,
) -> SseRead:
    """Read a stream until the server ends it, or ``until`` holds (then hang up)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[SseEvent] = []
    comments = 0
    deadline = time.monotonic() + within
    async with client.stream("GET", path, headers=headers, timeout=within) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        kind, data, event_id = "message", [], None
        async for line in response.aiter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"stream not done in {within}s: {events[-5:]}")
            if line.startswith(":"):
                comments += 1
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line == "" and data:
                events.append(
                    SseEvent(kind, json.loads("\n".join(data)), event_id, time.perf_counter())
                )
                kind, data, event_id = "message", [], None
                if until is not None and until(events):
                    break
    return SseRead(events, comments)
