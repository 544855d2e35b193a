"""Schedules: a goal started on a cron line or an interval, as Temporal schedules.

Part of VigilClient (workers/client.py), which re-exports every name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Schedule,
    ScheduleActionExecution,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from vigil.schema import names
from vigil.schema.payloads import StartSessionInput
from vigil.workers.client_controls import SessionControls
from vigil.workers.client_errors import (
    BadArgument,
    Refused,
    UnknownSchedule,
    Unreachable,
    VigilError,
    temporal_refusal,
)
from vigil.workers.client_start import first_attributes, refuse_unknown_tools
from vigil.workers.client_views import SessionSummary
from vigil.workers.liveness import is_unreachable

CRON_MEMO = "vigil.cron"
"""The schedule memo key holding its cron expression as given."""
_BAD_SPEC = "Invalid schedule spec:"
"""How Temporal begins its refusal of a schedule's spec."""
_CRON_WORDS = ("cron", "second", "minute", "hour", "day", "month", "year", "field", "step")
"""Words of Temporal's refusals of a cron's fields (a time zone's or a jitter's say
neither)."""


def _cron_fault(message: str) -> bool:
    """Whether Temporal's refusal of a schedule is about its cron's fields."""
    if not message.startswith(_BAD_SPEC):
        return False
    said = message.removeprefix(_BAD_SPEC).lower()
    return "zone" not in said and any(word in said for word in _CRON_WORDS)


OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


def spec_text(cron: str | None, every: timedelta | None, time_zone: str | None) -> str:
    """When a schedule runs, as a person reads it: its cron line or its interval."""
    if cron:
        return f"cron {cron}" + (f" ({time_zone})" if time_zone else "")
    if every is not None:
        return f"every {span_text(every.total_seconds())}"
    return "calendar"


def span_text(seconds: float) -> str:
    """A span as it is written to vigil (``1d``, ``6h``, ``15m``, ``90s``)."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def is_goal_schedule(desc: ScheduleDescription) -> bool:
    """Whether a schedule is a goal: each of its runs a session, as ``create_schedule``
    makes them. vigil's own retention schedule (`vigil retention set`) is not one, nor is
    any other schedule Temporal holds; no face lists or operates those."""
    action = desc.schedule.action
    return (
        isinstance(action, ScheduleActionStartWorkflow)
        and action.workflow == names.WORKFLOW_SESSION
        and bool(action.args)
    )


def next_runs(desc: ScheduleDescription) -> list[datetime]:
    """When a schedule runs next: none while it is paused (Temporal still lists the times
    it would run at)."""
    return [] if desc.schedule.state.paused else list(desc.info.next_action_times)


TRIGGER_WAIT_SECONDS = 5.0
"""How long a trigger waits for the run it asked for to start."""


@dataclass(frozen=True)
class Triggered:
    """What a trigger did: the run it started (its session id), or what keeps it from
    starting (a run that still runs, under the schedule's overlap policy); neither when
    Temporal had started no run within ``TRIGGER_WAIT_SECONDS``."""

    run: str | None
    held: str | None
    skipped: bool = False
    """Whether nothing will start for it (overlap ``skip`` with a run that still runs, or
    ``buffer_one`` with a run waiting for it already)."""


def _sessions(executions: Iterable[ScheduleActionExecution]) -> list[str]:
    """The sessions (workflow ids) of a schedule's runs."""
    return [
        e.workflow_id for e in executions if isinstance(e, ScheduleActionExecutionStartWorkflow)
    ]


def running_sessions(desc: ScheduleDescription) -> list[str]:
    """The sessions of a schedule's runs that still run."""
    return _sessions(desc.info.running_actions)


def _action_ids(desc: ScheduleDescription) -> set[str]:
    """The sessions a schedule's description names as its recent and running runs."""
    recent = (a.action for a in desc.info.recent_actions)
    return {*_sessions(recent), *running_sessions(desc)}


def _held(desc: ScheduleDescription) -> tuple[str, bool] | None:
    """What keeps a trigger's run from starting at once, from the schedule's description
    read just before it: a run that still runs, under an overlap policy other than
    ``allow_all`` (and whether nothing will start for the trigger); None when nothing
    does."""
    running = running_sessions(desc)
    overlap = desc.schedule.policy.overlap
    if not running or overlap == ScheduleOverlapPolicy.ALLOW_ALL:
        return None
    policy = overlap.name.lower()
    # Runs that wait for the running one to end (Temporal's buffer): under buffer_one a
    # trigger while one waits is dropped.
    waiting = desc.raw_description.info.buffer_size
    outcome = {
        ScheduleOverlapPolicy.SKIP: "this one does not start",
        ScheduleOverlapPolicy.BUFFER_ONE: (
            "a run already waits for it: this one does not start"
            if waiting
            else "this one starts once it ends"
        ),
        ScheduleOverlapPolicy.BUFFER_ALL: (
            f"this one starts once it and the {waiting} waiting before this one ended"
            if waiting
            else "this one starts once it ends"
        ),
        ScheduleOverlapPolicy.CANCEL_OTHER: "Temporal cancels it, and this one starts",
        ScheduleOverlapPolicy.TERMINATE_OTHER: "Temporal terminates it, and this one starts",
    }.get(overlap, "this one starts as that policy lets it")
    dropped = overlap == ScheduleOverlapPolicy.SKIP or (
        overlap == ScheduleOverlapPolicy.BUFFER_ONE and waiting > 0
    )
    said = f"its run {running[0]} still ran a moment ago: under overlap {policy!r} {outcome}"
    return said, dropped


class ScheduleControls(SessionControls):
    """Schedules (a layer of VigilClient)."""

    # --- schedules --------------------------------------------------------------------

    async def create_schedule(
        self,
        schedule_id: str,
        template: StartSessionInput,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        time_zone: str | None = None,
        jitter: timedelta | None = None,
        overlap: str = "skip",
        catchup_window: timedelta | None = None,
        paused: bool = False,
        note: str | None = None,
        sees_agent: Callable[[str], bool] | None = None,
    ) -> str:
        from vigil.workers.inputs import check_schedule

        check_schedule(
            schedule_id, template, cron=cron, every=every, time_zone=time_zone, note=note
        )
        if schedule_id == names.SCHEDULE_RETENTION:
            raise BadArgument(
                f"schedule id {schedule_id!r} is vigil's own (the retention sweep, "
                "`vigil retention set`): choose another"
            )
        if (cron is None) == (every is None):
            raise BadArgument("give exactly one of a cron expression or an interval")
        if overlap not in OVERLAP:
            raise BadArgument(f"unknown overlap policy {overlap!r}; one of {', '.join(OVERLAP)}")
        # Each run pins the agent's newest version at its start, unless the template pins one.
        found = await self.require_agent(
            template.agent_id, template.agent_version, sees_agent=sees_agent
        )
        refuse_unknown_tools(template.agent_id, template.policy, found)
        arg = template.model_copy(
            update={
                "schedule_id": schedule_id,
                "temporal_address": template.temporal_address or self.endpoints().temporal_address,
            }
        )
        spec = ScheduleSpec(
            cron_expressions=[cron] if cron else [],
            intervals=[ScheduleIntervalSpec(every=every)] if every else [],
            time_zone_name=time_zone,
            jitter=jitter,
        )
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                names.WORKFLOW_SESSION,
                arg,
                id=f"{schedule_id}-run",
                task_queue=self.settings.task_queue,
                typed_search_attributes=TypedSearchAttributes(
                    [
                        *first_attributes(template.agent_id, template.goal),
                        SearchAttributePair(names.SA_SCHEDULE, schedule_id),
                    ]
                ),
                memo={
                    "goal": template.goal,
                    "agent": template.agent_id,
                    "schedule": schedule_id,
                    "spec": spec_text(cron, every, time_zone),
                },
            ),
            spec=spec,
            policy=SchedulePolicy(
                overlap=OVERLAP[overlap],
                catchup_window=catchup_window or timedelta(minutes=5),
            ),
            state=ScheduleState(paused=paused, note=note or f"vigil goal for {template.agent_id}"),
        )
        try:
            # The cron as typed: Temporal describes it back as structured calendars.
            await self.temporal.create_schedule(
                schedule_id, schedule, memo={CRON_MEMO: cron} if cron else None
            )
        except ScheduleAlreadyRunningError as exc:
            raise Refused(f"a schedule with id {schedule_id!r} already exists") from exc
        except RPCError as exc:
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:  # a bad cron, time zone, ...
                if cron and _cron_fault(exc.message):
                    # The cron's own fault, in vigil's words (Temporal's speak of 5-7
                    # fields, where five or a macro is what vigil takes).
                    raise BadArgument(
                        f"bad cron expression {cron[:80]!r}: "
                        f"{exc.message.removeprefix(_BAD_SPEC).strip()} (five fields, "
                        "minute hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI', "
                        "or a macro such as @daily)"
                    ) from exc
                raise BadArgument(
                    f"could not create schedule {schedule_id!r}: {exc.message}"
                ) from exc
            raise VigilError(f"could not create schedule {schedule_id!r}: {exc.message}") from exc
        return schedule_id

    async def list_schedules(self) -> list[dict[str, Any]]:
        """Every goal schedule with its goal, agent, when it runs, and its next run times."""
        out: list[dict[str, Any]] = []
        async for item in await self.temporal.list_schedules():
            try:
                desc = await self.temporal.get_schedule_handle(item.id).describe()
            except RPCError:  # deleted between the listing and now
                continue
            if not is_goal_schedule(desc):
                continue
            action = desc.schedule.action
            memo: dict[str, Any] = {}
            if isinstance(action, ScheduleActionStartWorkflow) and action.memo:
                for key, raw in action.memo.items():
                    with contextlib.suppress(Exception):
                        memo[key] = (await self.temporal.data_converter.decode([raw]))[0]
            spec = desc.schedule.spec
            every = [i.every for i in spec.intervals]
            out.append(
                {
                    "id": item.id,
                    "agent": memo.get("agent"),
                    "goal": memo.get("goal"),
                    "spec": memo.get("spec")
                    or spec_text(
                        spec.cron_expressions[0] if spec.cron_expressions else None,
                        every[0] if every else None,
                        spec.time_zone_name,
                    ),
                    "paused": desc.schedule.state.paused,
                    "next": [t.isoformat() for t in next_runs(desc)[:3]],
                    "recent": len(desc.info.recent_actions),
                }
            )
        return out

    async def _schedule(self, schedule_id: str, op: Any) -> Any:
        try:
            return await op
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UnknownSchedule(f"no schedule with id {schedule_id!r}") from exc
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise temporal_refusal(exc) from exc

    async def pause_schedule(self, schedule_id: str, note: str = "paused from vigil") -> bool:
        """Pause; False when it already was (nothing changed)."""
        desc = await self.describe_schedule(schedule_id)
        if desc.schedule.state.paused:
            return False
        await self._schedule(
            schedule_id, self.temporal.get_schedule_handle(schedule_id).pause(note=note)
        )
        return True

    async def unpause_schedule(self, schedule_id: str, note: str = "resumed from vigil") -> bool:
        """Unpause; False when it was not paused (nothing changed)."""
        desc = await self.describe_schedule(schedule_id)
        if not desc.schedule.state.paused:
            return False
        await self._schedule(
            schedule_id, self.temporal.get_schedule_handle(schedule_id).unpause(note=note)
        )
        return True

    async def trigger_schedule(self, schedule_id: str) -> Triggered:
        """Ask for one run now, and wait (up to ``TRIGGER_WAIT_SECONDS``) for the run it
        starts. Temporal names a schedule's runs by the second it takes their trigger in,
        so a trigger sent in the second of the schedule's last run would start nothing: it
        waits for the next second first, by this host's clock (a clock off by a second or
        more waits wrongly). The run it names is the first new one seen: two triggers at
        once, or a run the schedule's own timing starts meanwhile, may name the same."""
        desc = await self.describe_schedule(schedule_id)
        known = _action_ids(desc)
        last = max((a.started_at for a in desc.info.recent_actions), default=None)
        if last is not None:
            wait = (last.replace(microsecond=0) + timedelta(seconds=1)) - datetime.now(UTC)
            if timedelta(0) < wait <= timedelta(seconds=1):
                await asyncio.sleep(wait.total_seconds() + 0.05)
        await self._schedule(schedule_id, self.temporal.get_schedule_handle(schedule_id).trigger())
        held = _held(desc)
        if held is not None:
            return Triggered(run=None, held=held[0], skipped=held[1])
        deadline = asyncio.get_running_loop().time() + TRIGGER_WAIT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            new = _action_ids(await self.describe_schedule(schedule_id)) - known
            if new:
                return Triggered(run=min(new), held=None)
        return Triggered(run=None, held=None)

    async def backfill_schedule(
        self, schedule_id: str, start: datetime, end: datetime
    ) -> int | None:
        """Start the runs the schedule would have started from ``start`` to ``end``, all
        at once; how many, as far as its timing lets that be counted (``check_backfill``,
        which refuses an empty window or one of too many runs)."""
        from vigil.workers.inputs import check_backfill  # inputs imports the client

        handle = self.temporal.get_schedule_handle(schedule_id)
        desc = await self.describe_schedule(schedule_id)
        spec = desc.schedule.spec
        cron = (await desc.memo()).get(CRON_MEMO)
        runs = check_backfill(
            start,
            end,
            every_seconds=spec.intervals[0].every.total_seconds() if spec.intervals else None,
            cron=str(cron) if cron is not None and not spec.intervals else None,
            time_zone=spec.time_zone_name or None,
        )
        await self._schedule(
            schedule_id,
            handle.backfill(
                ScheduleBackfill(
                    start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.ALLOW_ALL
                )
            ),
        )
        return runs

    async def delete_schedule(self, schedule_id: str) -> None:
        """Delete a goal schedule (its past runs stay in the record)."""
        await self.describe_schedule(schedule_id)  # a goal's, or UnknownSchedule
        await self._schedule(schedule_id, self.temporal.get_schedule_handle(schedule_id).delete())

    async def describe_schedule(self, schedule_id: str) -> ScheduleDescription:
        """A goal schedule as Temporal describes it. UnknownSchedule when there is none, or
        when it is no goal (``is_goal_schedule``): every schedule operation reads this
        first, so the CLI, the API and a script refuse vigil's own schedules alike."""
        desc: ScheduleDescription = await self._schedule(
            schedule_id, self.temporal.get_schedule_handle(schedule_id).describe()
        )
        if not is_goal_schedule(desc):
            raise UnknownSchedule(f"no schedule with id {schedule_id!r}")
        return desc

    async def schedule_runs(self, schedule_id: str, limit: int = 100) -> list[SessionSummary]:
        """A goal's newest ``limit`` runs: one query on the record (a deleted schedule's
        runs too)."""
        runs = await self.list_sessions(schedule_id=schedule_id, limit=limit)
        if not runs:
            await self.describe_schedule(schedule_id)  # UnknownSchedule when there is none
        return runs
