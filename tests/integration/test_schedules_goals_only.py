"""`vigil schedule ...` and the client's schedule calls reach goal schedules only, as the
API does: a Temporal schedule that starts no session (vigil's own `vigil-retention`, or
any other) is answered as absent (exit 4, "no goal schedule") and left as it was.

Before, `vigil schedule delete vigil-retention` silently deleted vigil's retention
schedule, and `vigil schedule list` listed it among the goals.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, poll
from vigil.schema import names
from vigil.schema.governance import RetentionRunInput
from vigil.workers.client import UnknownSchedule, VigilClient
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration

NOTE = "not a goal: starts the retention workflow"


@pytest.fixture
def other_schedule(cli: CLIStack) -> Iterator[str]:
    """A paused Temporal schedule of the retention workflow (as `vigil retention set`
    makes), under an id of its own, on a task queue no worker polls. Deleted at the end,
    with any run something started of it."""
    sid = f"not-a-goal-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        temporal = await connect(cli.settings)
        await temporal.create_schedule(
            sid,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    names.WORKFLOW_RETENTION,
                    RetentionRunInput(),
                    id=f"{sid}-run",
                    task_queue=f"nowhere-{uuid.uuid4().hex}",
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(days=1))]),
                state=ScheduleState(paused=True, note=NOTE),
            ),
        )

    async def remove() -> None:
        temporal = await connect(cli.settings)
        with contextlib.suppress(RPCError):
            await temporal.get_schedule_handle(sid).delete()
        async for wf in temporal.list_workflows(f"TemporalScheduledById = '{sid}'"):
            with contextlib.suppress(RPCError):
                await temporal.get_workflow_handle(wf.id, run_id=wf.run_id).terminate()

    asyncio.run(create())
    try:
        yield sid
    finally:
        asyncio.run(remove())


async def _listed_by_temporal(temporal: Client, sid: str) -> bool:
    return sid in [s.id async for s in await temporal.list_schedules()]


def test_the_cli_answers_a_schedule_that_is_no_goal_as_absent(
    cli: CLIStack, other_schedule: str
) -> None:
    sid = other_schedule

    async def listed() -> bool:
        return await _listed_by_temporal(await connect(cli.settings), sid)

    poll(lambda: asyncio.run(listed()) or None, 30, f"{sid} in Temporal's listing")
    assert sid not in [row["id"] for row in cli.vigil.json("schedule", "list")]

    calls = [
        ("schedule", "pause", sid),
        ("schedule", "resume", sid),
        ("schedule", "trigger", sid),
        ("schedule", "backfill", sid, "--from", "2026-01-01T00:00Z", "--to", "2026-01-03T00:00Z"),
        ("schedule", "runs", sid),
        ("schedule", "delete", sid),
    ]
    for args, done in zip(calls, cli.vigil.many(*calls), strict=True):
        assert done.returncode == 4, explain(done)
        assert one_error_line(done) == f"error: no schedule with id {sid!r}", args

    async def described() -> tuple[bool, str | None, int]:
        temporal = await connect(cli.settings)
        desc = await temporal.get_schedule_handle(sid).describe()
        state = desc.schedule.state
        return state.paused, state.note, len(desc.info.recent_actions)

    assert asyncio.run(described()) == (True, NOTE, 0), "the schedule was changed"


async def test_the_client_answers_a_schedule_that_is_no_goal_as_absent(
    cli: CLIStack, other_schedule: str
) -> None:
    sid = other_schedule
    client = await VigilClient.connect(cli.settings)
    try:
        for call in (
            lambda: client.describe_schedule(sid),
            lambda: client.pause_schedule(sid),
            lambda: client.unpause_schedule(sid),
            lambda: client.trigger_schedule(sid),
            lambda: client.schedule_runs(sid),
            lambda: client.delete_schedule(sid),
        ):
            with pytest.raises(UnknownSchedule, match=f"no schedule with id '{sid}'"):
                await call()
        deadline = asyncio.get_running_loop().time() + 30
        while not await _listed_by_temporal(client.temporal, sid):
            assert asyncio.get_running_loop().time() < deadline, f"{sid} never listed"
            await asyncio.sleep(0.2)
        assert sid not in [row["id"] for row in await client.list_schedules()]
        desc = await client.temporal.get_schedule_handle(sid).describe()
        assert desc.schedule.state.paused and desc.schedule.state.note == NOTE
    finally:
        await client.close()
