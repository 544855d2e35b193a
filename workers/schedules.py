"""Recurring goals as typed views: what a schedule runs, when, and whether it is paused.

Temporal holds the schedules; this reads them back into :class:`ScheduleView` (the goal,
agent and pinned version come from the session template each run starts with). The
HTTP API serves these views; creating and operating schedules stays on the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import ScheduleActionStartWorkflow, ScheduleDescription

from vigil.schema import names
from vigil.schema.payloads import StartSessionInput
from vigil.workers.client import (
    CRON_MEMO,
    OVERLAP,
    NotFound,
    VigilClient,
    next_runs,
    running_sessions,
)

_OVERLAP_NAMES = {policy: name for name, policy in OVERLAP.items()}
NEXT_RUNS = 5


def _seconds(span: timedelta | None) -> float | None:
    return span.total_seconds() if span else None


@dataclass(frozen=True)
class ScheduleView:
    """One recurring goal as Temporal holds it."""

    id: str
    agent_id: str
    goal: str
    agent_version: int | None
    """The pinned definition version; None means each run takes the newest."""
    cron: str | None
    every_seconds: float | None
    time_zone: str | None
    overlap: str
    paused: bool
    note: str
    next_runs: list[datetime]
    runs_started: int
    """Runs started so far, by its timing, triggers and backfills."""
    skipped_overlap: int
    """Runs not started because an earlier one still ran (its overlap policy)."""
    missed_catchup: int
    """Runs not started because Temporal could not start them within the catch-up window
    (the server or the schedule was down longer)."""
    running: list[str]
    """The sessions of its runs that still run."""
    buffered: int
    """Runs waiting to start once the running one ends (overlap buffer_one, buffer_all)."""
    jitter_seconds: float | None
    """Each run starts up to this much after its time; none when unset."""
    catchup_seconds: float | None
    max_steps: int | None
    """Each run's step budget; None: the agent's."""
    require_approval: list[str] | None
    """The tools whose calls wait for a person; None: the agent's rules."""
    created_at: datetime | None


class ScheduleService:
    """Typed reads of vigil's goal schedules (other schedules, like retention, are skipped)."""

    def __init__(self, client: VigilClient) -> None:
        self.client = client

    async def get(self, schedule_id: str) -> ScheduleView:
        """The schedule; UnknownSchedule when there is none (or it is not a goal: the
        client's ``describe_schedule`` decides)."""
        return await self._view(await self.client.describe_schedule(schedule_id))

    async def list(
        self, limit: int = 200, sees_agent: Callable[[str], bool] | None = None
    ) -> list[ScheduleView]:
        """Goal schedules by id, at most ``limit``: of the agents ``sees_agent`` admits
        when given (every schedule is looked at until ``limit`` of those are found, not
        only the first ``limit`` ids)."""
        ids: list[str] = []
        async for item in await self.client.temporal.list_schedules():
            action = item.schedule.action if item.schedule else None
            if getattr(action, "workflow", None) == names.WORKFLOW_SESSION:
                ids.append(item.id)
        ids.sort()
        found: list[ScheduleView] = []
        for start in range(0, len(ids), limit):
            views = await asyncio.gather(*(self._maybe(i) for i in ids[start : start + limit]))
            found.extend(
                v for v in views if v is not None and (sees_agent is None or sees_agent(v.agent_id))
            )
            if len(found) >= limit:
                break
        return found[:limit]

    async def _maybe(self, schedule_id: str) -> ScheduleView | None:
        try:
            return await self.get(schedule_id)
        except NotFound:  # deleted between the listing and the look
            return None

    async def _view(self, desc: ScheduleDescription) -> ScheduleView:
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)  # a goal's (is_goal_schedule)
        converter = self.client.temporal.data_converter
        [template] = await converter.decode([action.args[0]], [StartSessionInput])
        assert isinstance(template, StartSessionInput)
        memo = await desc.memo()
        spec = desc.schedule.spec
        cron = memo.get(CRON_MEMO)
        if cron is None and spec.cron_expressions:
            cron = spec.cron_expressions[0]
        every = spec.intervals[0].every.total_seconds() if spec.intervals else None
        policy = desc.schedule.policy
        info = desc.info
        given = template.overrides or []
        steps_given = "budget" in given or "budget.max_steps" in given
        return ScheduleView(
            id=desc.id,
            agent_id=template.agent_id,
            goal=template.goal,
            agent_version=template.agent_version,
            cron=str(cron) if cron is not None else None,
            every_seconds=every,
            time_zone=spec.time_zone_name,
            overlap=_OVERLAP_NAMES.get(policy.overlap, str(policy.overlap)),
            paused=desc.schedule.state.paused,
            note=desc.schedule.state.note or "",
            next_runs=next_runs(desc)[:NEXT_RUNS],
            runs_started=info.num_actions,
            skipped_overlap=info.num_actions_skipped_overlap,
            missed_catchup=info.num_actions_missed_catchup_window,
            running=sorted(running_sessions(desc)),
            buffered=desc.raw_description.info.buffer_size,
            jitter_seconds=_seconds(spec.jitter),
            catchup_seconds=_seconds(policy.catchup_window),
            max_steps=template.budget.max_steps if steps_given else None,
            require_approval=template.policy.require_approval,
            created_at=info.created_at,
        )
