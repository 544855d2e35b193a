"""Whether how an activity is scheduled moves the round trip: the floor's no-op activity
against the same loop with a heartbeat timeout, with a model step's payload sizes, with a
retry policy and a summary, and with all of it as vigil schedules a default-mode model
call (bench/floor_workflows.py, ``SHAPES``).

One worker built like vigil's (payload encryption on, as every worker runs) on the
embedded stack; each shape runs a loop of N activities, the shapes in rounds so a burst
of load on the shared machine hits all alike. Prints ms per activity, the median of the
rounds and each round's, and each shape's median as a multiple of "plain"'s. Asserts
nothing about time.

    uv run python -m bench.activity_shape --activities 60 --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from bench.floor import table
from bench.floor_workflows import SHAPES, WORKFLOWS, ShapedActivityLoop, echo, noop
from tests.support.teststack import scratch_stack
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect, new_worker


async def bench(settings: Settings, activities: int, rounds: int) -> None:
    client = await connect(settings)
    queue = f"bench-shape-{uuid.uuid4()}"
    samples: dict[str, list[float]] = {shape: [] for shape in SHAPES}
    worker = new_worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=[noop, echo], settings=settings
    )
    async with worker:
        await client.execute_workflow(  # warm: connections, the first imports
            ShapedActivityLoop.run,
            args=[10, "as-vigil"],
            id=f"warm-{uuid.uuid4()}",
            task_queue=queue,
        )
        for n in range(rounds):
            print(f"round {n + 1} of {rounds} ...", flush=True)
            for shape in SHAPES:
                started = time.perf_counter()
                await client.execute_workflow(
                    ShapedActivityLoop.run,
                    args=[activities, shape],
                    id=f"shape-{uuid.uuid4()}",
                    task_queue=queue,
                )
                samples[shape].append((time.perf_counter() - started) * 1000 / activities)
    plain = statistics.median(samples["plain"])
    rows = []
    for shape in SHAPES:
        median = statistics.median(samples[shape])
        each = ", ".join(f"{v:.1f}" for v in samples[shape])
        rows.append(
            (f"{shape}: ms per activity", f"{median:.2f} ({each}); {median / plain:.2f}x plain")
        )
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--activities", type=int, default=60, help="activities per loop")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of every shape")
    args = parser.parse_args(argv)
    with scratch_stack("vigil_bench") as settings:
        asyncio.run(bench(settings, args.activities, args.rounds))


if __name__ == "__main__":
    main()
