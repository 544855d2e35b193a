"""A regular activity's background heartbeat: nothing for work that ends within the first
interval (a quick model call costs the server no heartbeat), then one beat an interval;
a local activity never beats."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from temporalio.testing import ActivityEnvironment

from vigil.activities.guard import heartbeating

EVERY = 0.2


async def beats_during(seconds: float, *, local: bool = False) -> list[Any]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, is_local=local)
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def work() -> None:
        async with heartbeating(EVERY):
            await asyncio.sleep(seconds)

    await env.run(work)
    return beats


async def test_work_shorter_than_an_interval_sends_no_heartbeat() -> None:
    assert await beats_during(EVERY / 4) == []


async def test_longer_work_beats_once_an_interval() -> None:
    # 3.5 intervals: beats at 1, 2 and 3 intervals (the last one may fall past the end on
    # a loaded machine), none at the start.
    assert len(await beats_during(EVERY * 3.5)) in (2, 3)


async def test_a_local_activity_never_beats() -> None:
    assert await beats_during(EVERY * 2.5, local=True) == []
