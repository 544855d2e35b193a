"""Recurring goals: `vigil schedule create | list | show | pause | resume | trigger | backfill |
delete | runs`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    AgentOpt,
    JsonOpt,
    StateOpt,
    _parse_since,
    csv,
    emit,
    err,
    fail,
    nothing,
    out,
    run_client,
    short,
    table,
    when,
)

if TYPE_CHECKING:
    from vigil.workers.client import VigilClient

# The overlap policies a schedule accepts (as vigil.workers.client.OVERLAP, which the
# client checks too); spelled here so that `--help` does not import the client.
OVERLAP_HELP = "skip|buffer_one|buffer_all|cancel_other|terminate_other|allow_all"

schedule_app = typer.Typer(help="Recurring goals as Temporal Schedules.", no_args_is_help=True)


@schedule_app.command("create")
def schedule_create(
    schedule_id: str,
    goal: Annotated[str, typer.Option("--goal", help="The goal of every run.")],
    agent: AgentOpt = "default",
    cron: Annotated[
        str | None, typer.Option(help="Cron expression, e.g. '0 9 * * MON-FRI'.")
    ] = None,
    every: Annotated[str | None, typer.Option(help="Interval, e.g. 15m, 6h, 1d.")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone for cron.")] = None,
    jitter: Annotated[str | None, typer.Option(help="Random delay per run, e.g. 30s.")] = None,
    overlap: Annotated[
        str, typer.Option(help=f"When a run is due while the last still runs: {OVERLAP_HELP}.")
    ] = "skip",
    catchup: Annotated[str | None, typer.Option(help="Catch-up window, e.g. 1h.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create paused.")] = False,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Each run's step budget (the agent's otherwise).")
    ] = None,
    approve_tools: Annotated[
        str | None,
        typer.Option(
            help="Tools whose calls wait for a person, comma-separated "
            "(the agent's rules otherwise)."
        ),
    ] = None,
    agent_version: Annotated[
        int | None,
        typer.Option("--agent-version", min=1, help="Pin a version; each run's newest otherwise."),
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a recurring goal: each run is an AgentSession from this template."""
    from vigil.workers import inputs
    from vigil.workers.client import VigilError

    try:
        inputs.check_schedule_id(schedule_id)
        timing = inputs.schedule_timing(
            cron=cron, every=every, time_zone=tz, jitter=jitter, catchup=catchup, overlap=overlap
        )
        template = inputs.schedule_template(
            agent=agent,
            goal=goal,
            max_steps=max_steps,
            require_approval=csv(approve_tools),
            agent_version=agent_version,
        )
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go(client: VigilClient) -> None:
        await client.create_schedule(
            schedule_id,
            template,
            cron=timing.cron,
            every=timing.every,
            time_zone=timing.time_zone,
            jitter=timing.jitter,
            overlap=timing.overlap,
            catchup_window=timing.catchup,
            paused=paused,
        )
        note = inputs.cron_note(timing.cron)
        emit(
            {"id": schedule_id, "created": True, **({"note": note} if note else {})},
            as_json,
            lambda: out.print(f"schedule {schedule_id} created" + (f"; {note}" if note else "")),
        )

    run_client(go, state_dir)


@schedule_app.command("list")
def schedule_list(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List schedules with their next run times."""

    async def go(client: VigilClient) -> None:
        rows = await client.list_schedules()

        def human() -> None:
            if not rows:
                nothing(
                    "no schedules", "create one: vigil schedule create ID --goal ... --every 1h"
                )
                return
            cells = []
            for r in rows:
                nexts = ", ".join(when(datetime.fromisoformat(t)) for t in r["next"]) or "-"
                state = "paused" if r["paused"] else "active"
                upcoming = "none while paused" if r["paused"] else nexts
                goal = short(r["goal"] or "-", 60)
                cells.append((r["id"], r["agent"] or "-", state, r["spec"], upcoming, goal))
            headers = ("id", "agent", "state", "runs", "next runs (UTC)", "goal")
            out.print(table(headers, cells, whole=2))

        emit(rows, as_json, human)

    run_client(go, state_dir)


@schedule_app.command("show")
def schedule_show(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """One schedule: its goal, agent, timing, state, note and next runs (the API's
    GET /schedules/{id})."""
    from datetime import timedelta

    from vigil.workers.client_schedules import span_text, spec_text
    from vigil.workers.schedules import ScheduleService

    async def go(client: VigilClient) -> None:
        view = await ScheduleService(client).get(schedule_id)

        def human() -> None:
            every = timedelta(seconds=view.every_seconds) if view.every_seconds else None
            timing = spec_text(view.cron, every, view.time_zone)
            if view.jitter_seconds:
                timing += f", each up to {span_text(view.jitter_seconds)} late (jitter)"
            nexts = ", ".join(when(t) for t in view.next_runs) or "-"
            started = f"{view.runs_started} started"
            if view.skipped_overlap:
                started += f", {view.skipped_overlap} skipped (an earlier run still ran)"
            if view.missed_catchup:
                started += f", {view.missed_catchup} missed (past the catch-up window)"
            approvals = view.require_approval
            rows = [
                (
                    "agent",
                    view.agent_id + (f" v{view.agent_version}" if view.agent_version else ""),
                ),
                ("goal", view.goal),
                ("runs", timing),
                ("overlap", view.overlap),
                (
                    "catch-up window",
                    span_text(view.catchup_seconds) if view.catchup_seconds else "-",
                ),
                ("step budget", str(view.max_steps) if view.max_steps else "the agent's"),
                (
                    "approval for",
                    "the agent's rules" if approvals is None else ", ".join(approvals) or "none",
                ),
                ("state", "paused" if view.paused else "active"),
                ("next runs (UTC)", "none while paused" if view.paused else nexts),
                ("runs so far", started),
                ("running now", ", ".join(view.running) or "-"),
                ("waiting to start", _buffered(view.buffered)),
                ("note", view.note or "-"),
                ("created", when(view.created_at) if view.created_at else "-"),
            ]
            out.print(f"schedule {schedule_id}")
            out.print(table(("", ""), rows, whole=1))

        emit(asdict(view), as_json, human)

    run_client(go, state_dir)


def _buffered(count: int) -> str:
    if not count:
        return "-"
    return f"{count} run{'s' if count != 1 else ''}, once the one running ends"


def _done(
    schedule_id: str,
    action: str,
    *,
    changed: bool = True,
    held: str | None = None,
    run: str | None = None,
) -> dict[str, object]:
    """What an operation on a schedule did, in the shape of the API's answer
    (``ScheduleDone``), so a script reads the CLI's JSON and the API's alike."""
    return {"id": schedule_id, "action": action, "changed": changed, "held": held, "run": run}


def _schedule_op(
    schedule_id: str,
    what: str,
    op: Callable[[VigilClient], Awaitable[None]],
    state_dir: str | None,
    as_json: bool,
) -> None:
    async def go(client: VigilClient) -> None:
        await op(client)
        emit(
            _done(schedule_id, what),
            as_json,
            lambda: out.print(f"schedule {schedule_id}: {what}"),
        )

    run_client(go, state_dir)


@schedule_app.command("pause")
def schedule_pause(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Pause a schedule (no new runs)."""

    async def go(client: VigilClient) -> None:
        changed = await client.pause_schedule(schedule_id)
        said = "paused" if changed else "already paused"
        emit(
            _done(schedule_id, "paused", changed=changed),
            as_json,
            lambda: out.print(Text(f"schedule {schedule_id}: {said}")),
        )

    run_client(go, state_dir)


@schedule_app.command("resume")
def schedule_resume(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Unpause a schedule."""

    async def go(client: VigilClient) -> None:
        changed = await client.unpause_schedule(schedule_id)
        said = "resumed" if changed else "not paused"
        emit(
            _done(schedule_id, "resumed", changed=changed),
            as_json,
            lambda: out.print(Text(f"schedule {schedule_id}: {said}")),
        )

    run_client(go, state_dir)


@schedule_app.command("trigger")
def schedule_trigger(
    schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False
) -> None:
    """Start one run now."""

    async def go(client: VigilClient) -> None:
        done = await client.trigger_schedule(schedule_id)
        if done.skipped:
            said = f"nothing started: {done.held}"
        elif done.held:
            said = f"triggered; {done.held}"
        elif done.run:
            said = f"triggered: started {done.run}"
        else:
            said = "triggered; Temporal has started no run for it yet"
        emit(
            _done(schedule_id, "triggered", changed=not done.skipped, held=done.held, run=done.run),
            as_json,
            lambda: out.print(Text(f"schedule {schedule_id}: {said}")),
        )
        if done.skipped:  # asked to start a run, and none starts: a script must know
            raise typer.Exit(EXIT_FAILED)

    run_client(go, state_dir)


@schedule_app.command("backfill")
def schedule_backfill(
    schedule_id: str,
    start_at: Annotated[str, typer.Option("--from", help="ISO start time.")],
    end_at: Annotated[str, typer.Option("--to", help="ISO end time.")],
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the schedule for the times it would have run in a past window."""
    start_dt, end_dt = _parse_since(start_at, "--from"), _parse_since(end_at, "--to")
    assert start_dt is not None and end_dt is not None

    async def go(client: VigilClient) -> None:
        runs = await client.backfill_schedule(schedule_id, start_dt, end_dt)
        said = "backfilled" if runs is None else f"backfilled ({_runs(runs)} in the window)"
        said += (
            "; a run made before under its time is not made again (its record stands), nor "
            "one still running"
        )
        emit(
            {**_done(schedule_id, "backfilled"), "runs": runs},
            as_json,
            lambda: out.print(f"schedule {schedule_id}: {said}"),
        )

    run_client(go, state_dir)


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"{count} runs"


@schedule_app.command("delete")
def schedule_delete(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a schedule (its past runs stay in the record)."""
    _schedule_op(
        schedule_id, "deleted", lambda c: c.delete_schedule(schedule_id), state_dir, as_json
    )


@schedule_app.command("runs")
def schedule_runs(
    schedule_id: str,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="At most this many runs, newest first.")
    ] = 100,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A goal's runs, newest first, from the record (a deleted schedule's too)."""

    async def go(client: VigilClient) -> None:
        rows = await client.schedule_runs(schedule_id, limit=limit)
        if len(rows) == limit:
            err.print(f"the newest {limit} runs; older ones: --limit (500 at most)")

        def human() -> None:
            if not rows:
                nothing(f"schedule {schedule_id} has not run yet")
                return
            cells = [(r.id, r.status, r.step, when(r.created_at)) for r in rows]
            out.print(table(("id", "status", "step", "created"), cells))

        emit([asdict(r) for r in rows], as_json, human)

    run_client(go, state_dir)
