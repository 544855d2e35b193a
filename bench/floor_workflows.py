"""No-op workflows and activity that measure the Temporal floor under vigil (bench/floor.py).

Kept apart from the bench's own imports: the workflow sandbox re-imports this module.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

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


@activity.defn(name="bench.echo")
async def echo(data: str) -> str:
    """Returns the first 800 characters of its input (a model step's result is about
    that size in history)."""
    return data[:800]


@workflow.defn(name="bench.ModelAndRow", sandboxed=True)
class ModelAndRow:
    """One activity doing the essential work of an agent step (bench/essential.py): the
    model call and the reply's row."""

    @workflow.run
    async def run(self, goal: str) -> str:
        out: str = await workflow.execute_activity(
            "bench.model_and_row", goal, result_type=str, start_to_close_timeout=TIMEOUT
        )
        return out


SHAPES = ("plain", "heartbeat", "payloads", "retry+summary", "as-vigil")
"""How ShapedActivityLoop schedules its activities: as the floor does ("plain": a start
to close timeout, tiny payloads); with a heartbeat timeout and a 10-minute limit
("heartbeat"); with a 1,400-character input and an 800-character result ("payloads");
with a retry policy naming error types and a summary ("retry+summary"); all of it, as
vigil schedules a default-mode model call ("as-vigil")."""


@workflow.defn(name="bench.ShapedActivityLoop", sandboxed=True)
class ShapedActivityLoop:
    """``count`` activities one after the other, each scheduled as ``shape`` says."""

    @workflow.run
    async def run(self, count: int, shape: str) -> None:
        vigil = shape == "as-vigil"
        data = "x" * (1400 if vigil or shape == "payloads" else 10)
        beat = vigil or shape == "heartbeat"
        named = vigil or shape == "retry+summary"
        retry = RetryPolicy(maximum_attempts=0, non_retryable_error_types=["A", "B"])
        for _ in range(count):
            await workflow.execute_activity(
                echo,
                data,
                start_to_close_timeout=timedelta(minutes=10) if beat else TIMEOUT,
                heartbeat_timeout=timedelta(seconds=30) if beat else None,
                retry_policy=retry if named else None,
                summary="step 1: model" if named else None,
            )


WORKFLOWS: list[type] = [ActivityLoop, LocalActivityLoop, OneActivity, ShapedActivityLoop]
