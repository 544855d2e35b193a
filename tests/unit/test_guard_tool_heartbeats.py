"""What a call's attempts leave each other in their heartbeats (activities/guard.py).

A regular activity's ledger (the outages ridden out, the attempts cut off by a worker's
shutdown) travels to its next attempt in its heartbeat details. ``ToolContext.heartbeat``
sent the tool's details alone, so a tool that heartbeat during a call that had met an
outage erased the ledger: the next attempt counted the outage's attempts as failures and
could give up a call that had failed no time at all. An attempt cut off by its worker's
shutdown leaves that in its ledger too, so that its retry does not count it (a few
times: past them, a call cut off again and again counts its attempts).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from vigil.activities.guard import CUT_OFFS_FORGIVEN, Ledger, counted_attempt, guarded
from vigil.activities.tools.python import ToolContext


class Call(BaseModel):
    session_id: str = "s-1"
    agent_id: str = "a-1"
    max_failures: int = 1


class Owner:
    @guarded
    async def run_tool(self, arg: Call) -> str:
        context = ToolContext(
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            step=1,
            tool="slow",
            call_id="c-1",
            idempotency_key="k",
            attempt=3,
        )
        context.heartbeat({"done": 40})
        context.heartbeat()
        return "ok"


async def test_a_tools_heartbeat_carries_the_calls_ledger_and_its_own_details() -> None:
    env = ActivityEnvironment()
    # Attempt 3: the two before it met an outage and were not failures.
    env.info = dataclasses.replace(
        env.info, attempt=3, heartbeat_details=[{"outages": 2, "streak": 2, "part": "postgres"}]
    )
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    assert await env.run(Owner().run_tool, Call()) == "ok"

    assert len(beats) == 2, beats
    with_details, bare = beats
    assert Ledger.from_details(with_details).outages == 2, with_details
    assert with_details[1:] == ({"done": 40},), with_details
    assert Ledger.from_details(bare).outages == 2, bare


class Slow:
    """An activity that waits until it is cut off, and notes the attempt it counted."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.counted: list[int] = []

    @guarded
    async def run_tool(self, arg: Call) -> str:
        self.counted.append(counted_attempt())
        self.started.set()
        await asyncio.sleep(60)
        return "not reached"


async def _cut_off(attempt: int, details: list[Any]) -> tuple[list[tuple[Any, ...]], list[int]]:
    """One attempt cut off by its worker's shutdown: its heartbeats, the attempt counted."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt, heartbeat_details=details)
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *d: beats.append(d)
    owner = Slow()
    task = asyncio.ensure_future(env.run(owner.run_tool, Call(max_failures=1)))
    await owner.started.wait()
    env.cancel(ActivityCancellationDetails(worker_shutdown=True))
    with pytest.raises(asyncio.CancelledError):
        await task
    return beats, owner.counted


async def test_an_attempt_cut_off_by_a_shutdown_is_left_uncounted_in_its_ledger() -> None:
    beats, counted = await _cut_off(1, [])
    assert counted == [1]
    (last,) = beats
    assert Ledger.from_details(last).cut_off == 1, last

    # The retry: not given up (its one-attempt budget is unspent), and counted as the first.
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=list(last))
    assert await env.run(Owner().run_tool, Call(max_failures=1)) == "ok"
    beats, counted = await _cut_off(2, list(last))
    assert counted == [1]
    assert Ledger.from_details(beats[-1]).cut_off == 2


async def test_cut_offs_past_the_forgiven_ones_count_as_failures() -> None:
    spent = [Ledger(cut_off=CUT_OFFS_FORGIVEN).details()]
    beats, counted = await _cut_off(CUT_OFFS_FORGIVEN + 1, spent)
    assert counted == [1]
    assert beats == [], beats  # nothing new to leave: this attempt will count
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=CUT_OFFS_FORGIVEN + 2, heartbeat_details=spent)
    with pytest.raises(ApplicationError, match="failed 1 times, the last without a result"):
        await env.run(Owner().run_tool, Call(max_failures=1))


class Progressing:
    """A tool that records its progress, then lives on while vigil heartbeats for it."""

    def __init__(self, progress: dict[str, int] | None) -> None:
        self.progress = progress
        self.seen: list[Any] = []
        self.started = asyncio.Event()

    @guarded
    async def run_tool(self, arg: Call) -> str:
        from temporalio import activity

        from vigil.activities import guard

        self.seen = list(activity.info().heartbeat_details[1:])
        if self.progress is not None:
            ToolContext(
                session_id=arg.session_id,
                agent_id=arg.agent_id,
                step=1,
                tool="slow",
                call_id="c-1",
                idempotency_key="k",
            ).heartbeat(self.progress)
        async with guard.heartbeating(every=0.01):
            self.started.set()
            await asyncio.sleep(60)
        return "not reached"


async def test_vigils_own_heartbeats_keep_the_tools_details() -> None:
    """vigil's heartbeat while a tool runs (every third of the heartbeat timeout), and the
    last one of an attempt its worker's shutdown cuts off, carried the ledger alone: a
    tool's recorded progress was erased, and the next attempt started over."""

    async def attempt(number: int, details: list[Any], tool: Progressing) -> list[Any]:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, attempt=number, heartbeat_details=details)
        beats: list[tuple[Any, ...]] = []
        env.on_heartbeat = lambda *d: beats.append(d)
        task = asyncio.ensure_future(env.run(tool.run_tool, Call(max_failures=5)))
        await tool.started.wait()
        await asyncio.sleep(0.1)  # a few of vigil's heartbeats
        env.cancel(ActivityCancellationDetails(worker_shutdown=True))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(beats) > 2, beats
        assert all(b[1:] == beats[-1][1:] for b in beats[1:]), beats
        return list(beats[-1])

    left = await attempt(1, [], Progressing({"done": 400}))
    assert left[1:] == [{"done": 400}], left
    # The next attempt reads them, and its own heartbeats (none from the tool) keep them.
    second = Progressing(None)
    left = await attempt(2, left, second)
    assert second.seen == [{"done": 400}]
    assert left[1:] == [{"done": 400}], left
    assert Ledger.from_details(left).cut_off == 2
