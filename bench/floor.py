"""The Temporal floor under vigil, measured on the same server as the figure it explains.

vigil's per-step and per-session figures only mean something next to what the server
itself costs: (1) a no-op activity round trip, with eager activity execution and without;
(2) a no-op local activity; (3) workflows per second that each run one no-op activity
(started all at once, finished when all are done). The worker is built like vigil's own
(`new_worker`, same sandbox and options), so only vigil's own work is left out.

    uv run python -m bench.floor              # on the test stack's server
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from temporalio.client import Client

from bench.floor_workflows import WORKFLOWS, ActivityLoop, LocalActivityLoop, OneActivity, noop
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect, new_worker


@dataclass
class Floor:
    activity_ms: float
    """One no-op activity round trip, eager execution on (the worker's default)."""
    activity_plain_ms: float
    """The same through the task queue (eager execution off)."""
    local_activity_ms: float
    one_activity_wf_per_s: float
    """Workflows of one no-op activity completed per second, all started at once."""
    starts_per_s: float
    """Of those, starts per second (the start calls alone)."""
    spread: dict[str, tuple[float, float]]
    """measure -> (min, max) over the repeats."""

    def rows(self) -> list[tuple[str, str]]:
        def fmt(key: str, value: float, digits: int = 1) -> str:
            lo, hi = self.spread[key]
            return f"{value:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"

        return [
            ("floor: no-op activity round trip, ms (eager)", fmt("activity", self.activity_ms)),
            (
                "floor: no-op activity round trip, ms (not eager)",
                fmt("activity_plain", self.activity_plain_ms),
            ),
            ("floor: no-op local activity, ms", fmt("local", self.local_activity_ms, 2)),
            (
                "floor: one-activity workflows completed/s",
                fmt("wf_per_s", self.one_activity_wf_per_s),
            ),
            ("floor: one-activity workflow starts/s", fmt("starts_per_s", self.starts_per_s)),
        ]


async def loop_ms(client: Client, task_queue: str, workflow: type, count: int) -> float:
    """ms per activity of one workflow that runs ``count`` of them one after another."""
    started = time.perf_counter()
    await client.execute_workflow(
        workflow.run,  # type: ignore[attr-defined]
        count,
        id=f"bench-floor-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    return (time.perf_counter() - started) * 1000 / count


async def one_activity_workflows(
    client: Client, task_queue: str, count: int, *, eager_start: bool = False
) -> tuple[float, float]:
    """(completed/s, started/s) for ``count`` one-activity workflows started at once."""
    started = time.perf_counter()
    handles = await asyncio.gather(
        *[
            client.start_workflow(
                OneActivity.run,
                id=f"bench-floor-one-{uuid.uuid4()}",
                task_queue=task_queue,
                request_eager_start=eager_start,
            )
            for _ in range(count)
        ]
    )
    start_s = time.perf_counter() - started
    await asyncio.gather(*[h.result() for h in handles])
    return count / (time.perf_counter() - started), count / start_s


@asynccontextmanager
async def floor_worker(client: Client, settings: Settings) -> AsyncIterator[str]:
    """A worker for the floor's workflows on a queue of its own (built like vigil's),
    warmed up with ten one-activity workflows; yields the queue."""
    queue = f"bench-floor-one-{uuid.uuid4()}"
    worker = new_worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=[noop], settings=settings
    )
    async with worker:
        await one_activity_workflows(client, queue, 10)
        yield queue


async def measure(
    client: Client,
    settings: Settings,
    *,
    loop: int = 50,
    workflows: int = 100,
    repeat: int = 3,
    eager_start: bool = False,
) -> Floor:
    """The floor on ``client``'s server, with workers built from ``settings``."""
    queue = f"bench-floor-{uuid.uuid4()}"
    plain_queue = f"{queue}-plain"
    samples: dict[str, list[float]] = {
        k: [] for k in ("activity", "activity_plain", "local", "wf_per_s", "starts_per_s")
    }
    worker = new_worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=[noop], settings=settings
    )
    plain = new_worker(
        client,
        task_queue=plain_queue,
        workflows=WORKFLOWS,
        activities=[noop],
        settings=settings,
        eager_activities=False,
    )
    async with worker, plain:
        await loop_ms(client, queue, ActivityLoop, 5)  # warm up both
        await loop_ms(client, plain_queue, ActivityLoop, 5)
        for _ in range(repeat):
            samples["activity"].append(await loop_ms(client, queue, ActivityLoop, loop))
            samples["activity_plain"].append(await loop_ms(client, plain_queue, ActivityLoop, loop))
            samples["local"].append(await loop_ms(client, queue, LocalActivityLoop, loop))
            done, starts = await one_activity_workflows(
                client, queue, workflows, eager_start=eager_start
            )
            samples["wf_per_s"].append(done)
            samples["starts_per_s"].append(starts)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return Floor(
        activity_ms=med["activity"],
        activity_plain_ms=med["activity_plain"],
        local_activity_ms=med["local"],
        one_activity_wf_per_s=med["wf_per_s"],
        starts_per_s=med["starts_per_s"],
        spread={k: (min(v), max(v)) for k, v in samples.items()},
    )


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{'measure'.ljust(width)}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


async def _main(settings: Settings, args: argparse.Namespace) -> None:
    client = await connect(settings)
    floor = await measure(
        client,
        settings,
        loop=args.loop,
        workflows=args.workflows,
        repeat=args.repeat,
        eager_start=args.eager_start,
    )
    print(table(floor.rows()))


def main(argv: list[str] | None = None) -> None:
    from tests.support.teststack import scratch_stack

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--loop", type=int, default=50, help="activities per loop workflow")
    parser.add_argument("--workflows", type=int, default=100, help="one-activity workflows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--eager-start", action="store_true", help="request eager starts")
    args = parser.parse_args(argv)
    with scratch_stack("vigil_bench") as settings:
        asyncio.run(_main(settings, args))


if __name__ == "__main__":
    sys.exit(main())
