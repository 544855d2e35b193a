"""No-op workflows and activity that measure the Temporal floor under vigil (bench/floor.py).

Kept apart from the bench's own imports: the workflow sandbox re-imports this module.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

TIMEOUT = timedelta(seconds=60)


@activity.defn(name="bench.noop")
async def noop() -> None:
    """Does nothing: what is left of a round trip is Temporal's and the worker's."""


@workflow.defn(name="bench.ActivityLoop", sandboxed=True)
class ActivityLoop:
    """``count`` no-op activities one after the other."""

    @workflow.run
    async def run(self, count: int) -> None:
        for _ in range(count):
            await workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="bench.LocalActivityLoop", sandboxed=True)
class LocalActivityLoop:
    """``count`` no-op local activities one after the other."""

    @workflow.run
    async def run(self, count: int) -> None:
        for _ in range(count):
            await workflow.execute_local_activity(noop, start_to_close_timeout=TIMEOUT)


@workflow.defn(name="bench.OneActivity", sandboxed=True)
class OneActivity:
    """The smallest workflow that does something: one no-op activity."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=TIMEOUT)


WORKFLOWS: list[type] = [ActivityLoop, LocalActivityLoop, OneActivity]
