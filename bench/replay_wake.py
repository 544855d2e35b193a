"""A long session woken on a worker that does not hold it: the replay, and the event loop.

A worker that does not hold a session in its cache (evicted, restarted, another worker)
replays the session's history before it can run the next step. With inline workflow
tasks (``VIGIL_WORKER_INLINE_WORKFLOW_TASKS``, on by default) that replay runs on the
worker's event loop, where the activities of every other session run too; on the SDK's
threads, CPython hands the GIL back to the loop every 5 ms. For each mode (default,
low-latency), a session of N steps (each one cheap tool call) goes to sleep; then each
round, for inline and threaded workflow tasks in turn, a worker in this process that
caches no session (``worker_max_cached_workflows = 0``: every workflow task replays the
history) is warmed up on a short session of its own (its connections, pools and
statements ready) and takes one wake of the long one. Printed per case (median and range
over the rounds):

- wake -> asleep again one step later (ms), the replays in it;
- the event loop's longest stall meanwhile and its stalls in all (what a task asking for
  1 ms sleeps over and over overshot, in all: only overshoots past 5 ms count), what any
  activity on that worker would have waited.

Prints figures; asserts nothing.

    uv run python -m bench.replay_wake
    uv run python -m bench.replay_wake --steps 190 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowHandle

from bench.floor import table
from bench.session_overhead import CHEAP_CALL
from bench.step_modes import MODES, apply_agents
from tests.support.llm_stub import Reply, StubProcess
from tests.support.sessions import running_worker, start, stub_settings
from tests.support.teststack import scratch_stack
from vigil.schema import names
from vigil.schema.payloads import Budget, StartSessionInput, ToolPolicy, WakeInput
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect

SLEEP_AT = "sleep at step "


_CALLS: dict[str, int] = {}
"""Model calls per session so far, by system prompt (the stub process's own)."""


def responder(body: Any) -> Reply:
    """A cheap tool call each step until the step the system prompt names, then sleep for a
    year (again after every wake). The prompt names a session of its own too."""
    text = "\n".join(str(m.get("content") or "") for m in body["messages"])
    goal = next((line for line in text.splitlines() if SLEEP_AT in line), "")
    at = int(goal.rsplit(SLEEP_AT, 1)[1].split()[0]) if goal else 1
    _CALLS[goal] = step = _CALLS.get(goal, 0) + 1
    if step >= at:
        return Reply.tool_call("wait_until", {"seconds": 365 * 24 * 3600}, usage=(50, 5))
    return Reply.tool_call(*CHEAP_CALL, usage=(50, 5))


class LoopWatch:
    """Overshoots of a 1 ms sleep on this loop while it runs: the longest, and the sum of
    those past 5 ms."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.stalled = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            over = time.perf_counter() - asked - 0.001
            self.longest = max(self.longest, over)
            if over > 0.005:
                self.stalled += over

    def __enter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def status_of(db: asyncpg.Connection, sid: str) -> tuple[int, str]:
    row = await db.fetchrow("SELECT step, status FROM sessions WHERE id = $1", sid)
    return (row["step"], row["status"]) if row is not None else (0, "")


async def until_asleep(db: asyncpg.Connection, sid: str, step: int, within: float) -> None:
    deadline = time.perf_counter() + within
    while True:
        at, status = await status_of(db, sid)
        if at >= step and status == "sleeping":
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{sid} not asleep at step {step} within {within}s")
        await asyncio.sleep(0.002)


def session_input(sid: str, mode: str, steps: int, wakes: int) -> StartSessionInput:
    return StartSessionInput(
        agent_id=MODES[mode],
        goal=f"bench replay {sid}",
        # In every request (the goal leaves the window): the stub counts calls by it.
        system_prompt=f"A bench session {sid}: {SLEEP_AT}{steps} (then on every wake).",
        budget=Budget(max_steps=steps + wakes + 10),
        policy=ToolPolicy(require_approval=[]),
        overrides=["budget", "system_prompt"],
    )


async def wake(
    handle: WorkflowHandle[Any, Any], db: asyncpg.Connection, sid: str, step: int
) -> float:
    """ms from a wake until the session sleeps again at ``step``."""
    started = time.perf_counter()
    await handle.signal(names.SIG_WAKE, WakeInput(by="bench"))
    await until_asleep(db, sid, step, 120)
    return (time.perf_counter() - started) * 1000


async def case(
    client: Client,
    settings: Settings,
    db: asyncpg.Connection,
    mode: str,
    steps: int,
    rounds: int,
) -> list[tuple[str, str]]:
    task_queue = f"bench-replay-{uuid.uuid4()}"
    sid = f"bench-replay-{mode}-{uuid.uuid4()}"
    async with running_worker(client, settings, task_queue):
        handle = await start(
            client, task_queue, session_input(sid, mode, steps, 2 * rounds), session_id=sid
        )
        await until_asleep(db, sid, steps, 600)
    events = len((await handle.fetch_history()).events)
    step = steps
    walls: dict[bool, list[float]] = {True: [], False: []}
    longest: dict[bool, list[float]] = {True: [], False: []}
    stalled: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for inline in (True, False):  # alternating, so the machine's drift hits both
            cfg = settings.model_copy(
                update={"worker_inline_workflow_tasks": inline, "worker_max_cached_workflows": 0}
            )
            async with running_worker(client, cfg, task_queue):
                # Warmed up on a short session of its own: asleep, then woken once.
                warm = f"bench-replay-warm-{uuid.uuid4()}"
                short = await start(
                    client, task_queue, session_input(warm, mode, 2, 1), session_id=warm
                )
                await until_asleep(db, warm, 2, 60)
                await wake(short, db, warm, 3)
                with LoopWatch() as watch:
                    step += 1
                    walls[inline].append(await wake(handle, db, sid, step))
                longest[inline].append(watch.longest * 1000)
                stalled[inline].append(watch.stalled * 1000)
    label = f"{mode}, {steps} steps ({events} events)"
    rows: list[tuple[str, str]] = []
    for inline in (True, False):
        how = "inline" if inline else "threaded"
        rows.append((f"{label}, {how}: wake -> asleep, ms", spread(walls[inline])))
        rows.append((f"{label}, {how}: longest loop stall, ms", spread(longest[inline])))
        rows.append((f"{label}, {how}: loop stalls in all, ms", spread(stalled[inline])))
    return rows


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    await apply_agents(settings)
    client = await connect(settings)
    db = await asyncpg.connect(settings.endpoints().database_url or "")
    rows: list[tuple[str, str]] = []
    try:
        with StubProcess("bench.replay_wake:responder") as stub:
            cfg = stub_settings(settings, stub.url_openai)
            for mode in args.modes:
                for steps in args.steps:
                    print(f"{mode}, {steps} steps ...", file=sys.stderr, flush=True)
                    found = await case(client, cfg, db, mode, steps, args.rounds)
                    print(table(found), file=sys.stderr, flush=True)
                    rows += found
    finally:
        await db.close()
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 190])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=sorted(MODES))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    most = StartSessionInput.model_fields["steps_per_run"].default
    if max(args.steps) + 2 * args.rounds >= most:
        parser.error(f"steps + 2 x rounds must stay under {most}: one run, no hand-over")
    if os.environ.get("TEMPORAL_DEBUG"):
        parser.error("TEMPORAL_DEBUG is set: it would run the threaded case inline too")
    with scratch_stack("vigil_bench_replay") as settings:
        asyncio.run(bench(settings, args))


if __name__ == "__main__":
    main()
