"""Goals over time through `vigil schedule ...`: each run of a schedule is an AgentSession
whose record names the schedule; pause/resume show in list and describe; trigger and
backfill start runs; overlap policy skip is the default; delete leaves past runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, poll, query
from tests.support.llm_stub import Reply
from vigil.schema import names
from vigil.schema.payloads import StartSessionInput
from vigil.workers.client import NotFound, VigilClient
from vigil.workers.temporal import connect, data_converter

pytestmark = pytest.mark.integration


def describe(cli: CLIStack, schedule_id: str) -> Any:
    async def go() -> Any:
        client = await VigilClient.connect(cli.settings)
        try:
            return await client.describe_schedule(schedule_id)
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.fixture
def schedule_id(cli: CLIStack) -> Iterator[str]:
    """A fresh schedule id. At the end the schedule is deleted whatever happened, and its
    runs still in flight are let finish while the module's worker is still there."""
    sid = f"cli-sched-{uuid.uuid4().hex[:8]}"
    yield sid

    async def delete() -> None:
        client = await VigilClient.connect(cli.settings)
        try:
            with contextlib.suppress(NotFound):
                await client.delete_schedule(sid)
            deadline = asyncio.get_running_loop().time() + 30
            running = f"{names.SA_SCHEDULE.name} = '{sid}' AND ExecutionStatus = 'Running'"
            while [wf async for wf in client.temporal.list_workflows(running)]:
                assert asyncio.get_running_loop().time() < deadline, f"runs of {sid} still run"
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    asyncio.run(delete())


def runs(
    cli: CLIStack, schedule_id: str, at_least: int, status: str | None = None
) -> list[dict[str, Any]]:
    """Poll the record until the schedule has started ``at_least`` sessions (all of them
    with ``status`` when given)."""

    def probe() -> list[dict[str, Any]] | None:
        rows = query(
            cli.database_url,
            "SELECT id, agent_id, goal, status, schedule_id FROM sessions "
            "WHERE schedule_id = :s ORDER BY created_at",
            s=schedule_id,
        )
        enough = len(rows) >= at_least
        return rows if enough and all(status in (None, r["status"]) for r in rows) else None

    return poll(probe, 45, f"{at_least} runs of {schedule_id} ({status or 'any status'})")


def listed(cli: CLIStack, schedule_id: str, paused: bool) -> dict[str, Any]:
    """Poll `schedule list --json` (visibility lags a little) for the schedule's state."""

    def probe() -> dict[str, Any] | None:
        rows = [r for r in cli.vigil.json("schedule", "list") if r["id"] == schedule_id]
        return rows[0] if rows and rows[0]["paused"] is paused else None

    return poll(probe, 30, f"{schedule_id} listed with paused={paused}", every=0.5)


def test_interval_schedule_runs_pauses_resumes_and_deletes(cli: CLIStack, schedule_id: str) -> None:
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    created = cli.vigil.json(
        "schedule",
        "create",
        schedule_id,
        "--goal",
        "check the queue",
        "--agent",
        agent,
        "--every",
        "2s",
    )
    assert created == {"id": schedule_id, "created": True}
    again = cli.vigil("schedule", "create", schedule_id, "--goal", "x", "--every", "1h")
    assert again.returncode == 2, explain(again)
    assert one_error_line(again) == f"error: a schedule with id {schedule_id!r} already exists"

    desc = describe(cli, schedule_id)
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP  # the default
    assert [i.every for i in desc.schedule.spec.intervals] == [timedelta(seconds=2)]
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == names.WORKFLOW_SESSION
    assert action.task_queue == cli.settings.task_queue
    assert action.id == f"{schedule_id}-run"

    first = runs(cli, schedule_id, 1)[0]
    assert first["id"].startswith(f"{schedule_id}-run-")
    assert (first["agent_id"], first["goal"]) == (agent, "check the queue")
    from_cli = cli.vigil.json("schedule", "runs", schedule_id)
    assert first["id"] in [r["id"] for r in from_cli]
    assert {r["schedule_id"] for r in from_cli} == {schedule_id}
    # `list --schedule` as the API's ?schedule= (it had no such option).
    listed_runs = cli.vigil.json("list", "--schedule", schedule_id)
    assert first["id"] in [r["id"] for r in listed_runs]
    assert {r["agent_id"] for r in listed_runs} == {agent}
    assert cli.vigil.json("list", "--schedule", f"{schedule_id}-none") == []

    # The answer the API's pause gives (it was {"id", "paused", "was_paused"} here).
    assert cli.vigil.json("schedule", "pause", schedule_id) == {
        "id": schedule_id,
        "action": "paused",
        "changed": True,
        "held": None,
        "run": None,
    }
    row = listed(cli, schedule_id, paused=True)
    # A person sees what the schedule does, not only its id.
    assert (row["agent"], row["goal"], row["spec"]) == (agent, "check the queue", "every 2s")
    assert row["next"] == [], "a paused schedule has no next runs"
    state = describe(cli, schedule_id).schedule.state
    assert state.paused is True and state.note == "paused from vigil"
    # Pausing again changes nothing, and says so.
    twice = cli.vigil.ok("schedule", "pause", schedule_id)
    assert twice.stdout.strip() == f"schedule {schedule_id}: already paused"
    readable = cli.vigil.ok("schedule", "list").stdout
    line = next(ln for ln in readable.splitlines() if schedule_id in ln)
    assert "paused" in line and "none while paused" in line and "every 2s" in line
    assert "then:" not in line, line
    assert agent in line and "check the queue" in line

    cli.vigil.ok("schedule", "resume", schedule_id)
    assert listed(cli, schedule_id, paused=False)["next"], "a resumed schedule has next runs"
    # Resuming one that is not paused changes nothing, and says so (as pause does).
    again = cli.vigil.ok("schedule", "resume", schedule_id)
    assert again.stdout.strip() == f"schedule {schedule_id}: not paused"
    assert describe(cli, schedule_id).schedule.state.paused is False

    cli.vigil.ok("schedule", "delete", schedule_id)
    poll(
        lambda: schedule_id not in [r["id"] for r in cli.vigil.json("schedule", "list")],
        30,
        "the deleted schedule leaves the list",
        every=0.5,
    )
    gone, kept = cli.vigil.many(
        ("schedule", "trigger", schedule_id), ("schedule", "runs", schedule_id, "--json")
    )
    assert gone.returncode == 4 and "no schedule with id" in one_error_line(gone), explain(gone)
    assert kept.returncode == 0, explain(kept)  # its past runs stay in the record
    assert first["id"] in kept.stdout


def test_cron_schedule_in_a_time_zone_trigger_and_backfill(cli: CLIStack, schedule_id: str) -> None:
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    paris = ZoneInfo("Europe/Paris")
    cli.vigil.ok(
        "schedule",
        "create",
        schedule_id,
        "--goal",
        "triage new issues",
        "--agent",
        agent,
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Paris",
        "--max-steps",
        "5",
    )
    desc = describe(cli, schedule_id)
    assert desc.schedule.spec.time_zone_name == "Europe/Paris"
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    # A described schedule's arguments are raw payloads, encrypted like every other.
    converter = data_converter(cli.settings)
    [arg] = asyncio.run(converter.decode(desc.schedule.action.args[:1], [StartSessionInput]))
    assert (arg.agent_id, arg.goal, arg.schedule_id, arg.budget.max_steps) == (
        agent,
        "triage new issues",
        schedule_id,
        5,
    )
    # Its start sets the attributes a session would set first (so its runs set none of
    # them again: below).
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    started_with = action.typed_search_attributes
    assert [started_with.get(k) for k in (names.SA_STATUS, names.SA_STEP, names.SA_GOAL)] == [
        "running",
        0,
        "triage new issues",
    ]
    upcoming = listed(cli, schedule_id, paused=False)["next"]
    assert upcoming and all(
        datetime.fromisoformat(t).astimezone(paris).strftime("%H:%M") == "03:00" for t in upcoming
    ), upcoming

    done = cli.vigil.json("schedule", "trigger", schedule_id)
    assert {k: done[k] for k in ("id", "action", "changed", "held")} == {
        "id": schedule_id,
        "action": "triggered",
        "changed": True,
        "held": None,
    }
    [triggered] = runs(cli, schedule_id, 1)
    assert triggered["agent_id"] == agent and triggered["id"].startswith(f"{schedule_id}-run-")
    assert done["run"] == triggered["id"]  # the answer names the run it started

    # A two-day window holds exactly two 03:00 Paris times: two more runs.
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(days=3), now - timedelta(days=1)
    # A reversed window said "backfilled" and started nothing; one of years started
    # every run in it at once. Both are refused, and nothing starts.
    backfill = ("schedule", "backfill", schedule_id)
    reversed_ = cli.vigil(*backfill, "--from", end.isoformat(), "--to", start.isoformat())
    assert reversed_.returncode == 2, explain(reversed_)
    assert "the backfill window is empty" in one_error_line(reversed_)
    years = cli.vigil(*backfill, "--from", "2000-01-01T00:00:00Z", "--to", start.isoformat())
    assert years.returncode == 2, explain(years)
    assert "runs, all started at once: at most 100" in one_error_line(years)
    # A window still to come, or one before 1970, started runs it should not (the future
    # ones at once, under the ids of the runs to come) or none at all: refused.
    ahead = (now + timedelta(days=1)).isoformat(), (now + timedelta(days=2)).isoformat()
    for window, why in (
        (ahead, "in the past"),
        (("1969-12-30T00:00Z", "1970-01-02T00:00Z"), "1970"),
    ):
        refused = cli.vigil(*backfill, "--from", window[0], "--to", window[1], "--json")
        assert refused.returncode == 2, explain(refused)
        assert why in json.loads(refused.stderr)["error"]["message"], explain(refused)
    done_backfill = cli.vigil.ok(*backfill, "--from", start.isoformat(), "--to", end.isoformat())
    assert "(2 runs in the window)" in done_backfill.stdout, explain(done_backfill)
    every = runs(cli, schedule_id, 3)
    backfilled = sorted(r["id"] for r in every if r["id"] != triggered["id"])
    expected = []
    day = start.astimezone(paris).replace(hour=3, minute=0, second=0)
    while day <= end:
        if day >= start:
            expected.append(f"{schedule_id}-run-{day.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
        day += timedelta(days=1)
    assert len(expected) == 2 and backfilled == expected
    done = runs(cli, schedule_id, 3, status="completed")
    assert len(done) == 3 and {r["goal"] for r in done} == {"triage new issues"}
    # The same window again: Temporal starts its runs under the same ids, whose sessions
    # have ended. They took those records for their own and wrote a second end into each;
    # they end at once, failed, writing nothing there.
    first_runs = {r: asyncio.run(_run_of(cli, r)) for r in backfilled}
    cli.vigil.ok(*backfill, "--from", start.isoformat(), "--to", end.isoformat())
    for session_id, first_run in first_runs.items():
        failed = asyncio.run(_failure(cli, session_id, first_run))
        assert "belongs to an earlier session" in failed, failed
        ended = query(
            cli.database_url,
            "SELECT key FROM events WHERE session_id = :sid AND kind = 'session_ended'",
            sid=session_id,
        )
        assert [row["key"] for row in ended] == ["session:ended:completed"], ended
    set_by_run = asyncio.run(_attributes_set(cli, triggered["id"]))
    assert {"VigilStatus", "VigilStep"} <= set_by_run  # at its end
    assert not {"VigilGoal", "VigilAgent"} & set_by_run


async def _run_of(cli: CLIStack, workflow_id: str) -> str:
    """The newest run of ``workflow_id``."""
    client = await connect(cli.settings)
    return str((await client.get_workflow_handle(workflow_id).describe()).run_id)


async def _failure(cli: CLIStack, workflow_id: str, before: str) -> str:
    """The failure the run of ``workflow_id`` after ``before`` ends with, once it has."""
    from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

    client = await connect(cli.settings)
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(600):
        described = await handle.describe()
        if described.run_id != before and described.status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    else:
        return "no new run ended within 60 s"
    try:
        await client.get_workflow_handle(workflow_id, run_id=described.run_id).result()
    except WorkflowFailureError as exc:
        return str(exc.cause)
    return "it did not fail"


async def _attributes_set(cli: CLIStack, workflow_id: str) -> set[str]:
    """The search attributes a run's own updates set."""
    client = await connect(cli.settings)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    upserts = [e.upsert_workflow_search_attributes_event_attributes for e in history.events]
    return {k for u in upserts for k in u.search_attributes.indexed_fields}


def test_a_trigger_held_by_a_run_that_still_runs_says_so(cli: CLIStack, schedule_id: str) -> None:
    """Under the default overlap policy (skip) a trigger while a run still runs starts
    nothing: `trigger` said `triggered` all the same."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/held"}))
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", goal, "--agent", agent,
        "--cron", "0 3 * * *", "--approve-tools", "http_fetch",
    )  # fmt: skip
    assert cli.vigil.json("schedule", "trigger", schedule_id)["held"] is None
    [waiting] = runs(cli, schedule_id, 1, status="waiting_approval")
    done = cli.vigil("schedule", "trigger", schedule_id)
    # Exit 1: asked to start a run, none starts (it exited 0, so a script could not tell).
    assert done.returncode == 1, explain(done)
    held = done.stdout.strip()
    assert held == (
        f"schedule {schedule_id}: nothing started: its run {waiting['id']} still ran a moment "
        "ago: under overlap 'skip' this one does not start"
    ), held
    # Nothing changed, and the JSON says so as a pause of a paused schedule does (it said
    # "changed": true).
    as_json = cli.vigil("schedule", "trigger", schedule_id, "--json")
    assert as_json.returncode == 1, explain(as_json)
    skipped = json.loads(as_json.stdout)
    assert (skipped["changed"], skipped["run"]) == (False, None), skipped
    cli.vigil.ok("cancel", waiting["id"])


def test_a_trigger_past_the_one_buffered_run_says_it_starts_nothing(
    cli: CLIStack, schedule_id: str
) -> None:
    """Under ``buffer_one`` one trigger waits for the running run; a third, while that
    one waits, is dropped by Temporal: `trigger` promised that it would start too."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/held"}))
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", goal, "--agent", agent,
        "--cron", "0 3 * * *", "--approve-tools", "http_fetch", "--overlap", "buffer_one",
    )  # fmt: skip
    assert cli.vigil.json("schedule", "trigger", schedule_id)["held"] is None
    [waiting] = runs(cli, schedule_id, 1, status="waiting_approval")
    buffered = cli.vigil.json("schedule", "trigger", schedule_id)
    assert "this one starts once it ends" in buffered["held"], buffered
    # `show` says a run waits (it showed the run running and nothing of the one waiting).
    shown = cli.vigil.json("schedule", "show", schedule_id)
    assert (shown["running"], shown["buffered"]) == ([waiting["id"]], 1), shown
    human = cli.vigil.ok("schedule", "show", schedule_id).stdout
    assert "1 run, once the one running ends" in human, human
    dropped_run = cli.vigil("schedule", "trigger", schedule_id)
    assert dropped_run.returncode == 1, explain(dropped_run)
    dropped = dropped_run.stdout.strip()
    assert dropped.startswith(f"schedule {schedule_id}: nothing started: "), dropped
    assert "a run already waits for it: this one does not start" in dropped, dropped
    cli.vigil.ok("cancel", waiting["id"])
    # The buffered run starts once that one ended; the dropped one never does.
    started = runs(cli, schedule_id, 2)
    [buffered_run] = [r for r in started if r["id"] != waiting["id"]]
    cli.vigil.ok("cancel", buffered_run["id"])


def test_a_run_its_overlap_policy_cancels_is_cancelled_by_the_schedule(
    cli: CLIStack, schedule_id: str
) -> None:
    """Temporal's scheduler cancels the running run when a newer one starts (overlap
    ``cancel_other``), with a reason that named no one: the run was "cancelled by a human",
    its end's actor ``unknown``."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/held"}))
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", goal, "--agent", agent,
        "--cron", "0 3 * * *", "--approve-tools", "http_fetch", "--overlap", "cancel_other",
    )  # fmt: skip
    cli.vigil.ok("schedule", "trigger", schedule_id)
    [first] = runs(cli, schedule_id, 1, status="waiting_approval")
    cli.vigil.ok("schedule", "trigger", schedule_id)
    rows = runs(cli, schedule_id, 2)
    ended = poll(
        lambda: query(
            cli.database_url,
            "SELECT summary, status FROM sessions WHERE id = :i AND status = 'cancelled'",
            i=first["id"],
        ),
        45,
        "the first run cancelled",
    )
    why = "a newer run of its schedule started (overlap policy cancel_other)"
    assert ended[0]["summary"] == f"cancelled by schedule:{schedule_id}: {why}", ended
    [end] = query(
        cli.database_url,
        "SELECT actor, reason FROM events WHERE session_id = :i AND kind = 'session_ended'",
        i=first["id"],
    )
    assert (end["actor"], end["reason"]) == (f"schedule:{schedule_id}", why), end
    for row in rows[1:]:
        cli.vigil("cancel", row["id"])


def test_schedule_show_tells_one_schedule(cli: CLIStack, schedule_id: str) -> None:
    """There was no way to see one schedule but in the whole list (the API has GET
    /schedules/{id})."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", "water the plants", "--agent", agent,
        "--cron", "0 3 * * *", "--tz", "Europe/Paris", "--paused",
    )  # fmt: skip
    shown = cli.vigil.json("schedule", "show", schedule_id)
    assert (shown["id"], shown["agent_id"], shown["goal"]) == (
        schedule_id,
        agent,
        "water the plants",
    )
    assert (shown["cron"], shown["time_zone"], shown["paused"]) == (
        "0 3 * * *",
        "Europe/Paris",
        True,
    )
    assert shown["overlap"] == "skip" and shown["created_at"].endswith("+00:00")
    assert (shown["runs_started"], shown["running"], shown["skipped_overlap"]) == (0, [], 0)
    assert shown["buffered"] == 0
    # Unset: each run takes the agent's budget and rules; Temporal's catch-up default.
    assert (shown["max_steps"], shown["require_approval"], shown["jitter_seconds"]) == (
        None,
        None,
        None,
    )
    human = cli.vigil.ok("schedule", "show", schedule_id).stdout
    assert "water the plants" in human and "Europe/Paris" in human and "paused" in human
    missing = cli.vigil("schedule", "show", "no-such-schedule")
    assert missing.returncode == 4, explain(missing)
    assert "no schedule with id 'no-such-schedule'" in one_error_line(missing)


def test_schedule_show_counts_every_run_started(cli: CLIStack, schedule_id: str) -> None:
    """`runs so far` counted the runs in Temporal's list of recent ones, which holds ten:
    a schedule that had run eleven times said 10."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    goal = cli.plan(Reply.text("done"))
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", goal, "--agent", agent,
        "--cron", "0 3 * * *", "--overlap", "allow_all",
    )  # fmt: skip
    for _ in range(11):
        cli.vigil.ok("schedule", "trigger", schedule_id)
    runs(cli, schedule_id, 11, status="completed")
    shown = cli.vigil.json("schedule", "show", schedule_id)
    assert (shown["runs_started"], shown["skipped_overlap"], shown["running"]) == (11, 0, [])
    assert "11 started" in cli.vigil.ok("schedule", "show", schedule_id).stdout


def test_schedule_show_tells_its_runs_limits_and_what_it_skipped(
    cli: CLIStack, schedule_id: str
) -> None:
    """`schedule show` left out what a schedule was created with beyond its timing (its
    jitter, catch-up window, step budget and approvals), the run that still runs and the
    runs its overlap policy skipped."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/held"}))
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", goal, "--agent", agent,
        "--cron", "0 3 * * *", "--jitter", "30s", "--catchup", "1h", "--max-steps", "3",
        "--approve-tools", "http_fetch",
    )  # fmt: skip
    cli.vigil.ok("schedule", "trigger", schedule_id)
    [waiting] = runs(cli, schedule_id, 1, status="waiting_approval")
    assert cli.vigil("schedule", "trigger", schedule_id).returncode == 1  # skipped
    shown = cli.vigil.json("schedule", "show", schedule_id)
    assert (shown["jitter_seconds"], shown["catchup_seconds"]) == (30, 3600), shown
    assert (shown["max_steps"], shown["require_approval"]) == (3, ["http_fetch"]), shown
    assert (shown["runs_started"], shown["running"]) == (1, [waiting["id"]]), shown
    assert shown["skipped_overlap"] == 1, shown
    human = cli.vigil.ok("schedule", "show", schedule_id).stdout
    for said in ("30s late (jitter)", "1h", "http_fetch", "1 skipped", waiting["id"]):
        assert said in human, human
    cli.vigil.ok("cancel", waiting["id"])


def test_a_cron_naming_both_kinds_of_day_says_it_runs_on_days_that_are_both(
    cli: CLIStack, schedule_id: str
) -> None:
    """Temporal runs `0 0 13 * FRI` on Fridays the 13th only; classic cron on either."""
    created = cli.vigil.json(
        "schedule", "create", schedule_id, "--goal", "g", "--cron", "0 0 13 * FRI",
    )  # fmt: skip
    assert created["created"] and "days that are both" in created["note"]
    shown = cli.vigil.json("schedule", "show", schedule_id)
    nexts = [datetime.fromisoformat(t) for t in shown["next_runs"]]
    assert nexts and all(t.weekday() == 4 and t.day == 13 for t in nexts), nexts


def test_a_cron_temporal_cannot_read_is_refused_in_vigils_words(
    cli: CLIStack, schedule_id: str
) -> None:
    """A cron past vigil's light check that Temporal refuses was its raw "Invalid schedule
    spec: ..." under "could not create schedule"; it is a bad cron expression, with what
    vigil takes."""
    done = cli.vigil("schedule", "create", schedule_id, "--goal", "g", "--cron", "61 * * * *")
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())
    assert "bad cron expression '61 * * * *':" in said and "five fields" in said, said
    assert "Invalid schedule spec" not in said and "5-7" not in said, said
    assert cli.vigil("schedule", "show", schedule_id).returncode != 0


def test_list_of_a_schedule_shows_its_runs_no_worker_has_taken(cli: CLIStack) -> None:
    """A run a schedule started while its workers were down was left out of `list
    --schedule` (it showed under `--agent` and `--status unrecorded`)."""
    from temporalio.common import SearchAttributePair, TypedSearchAttributes

    schedule = f"s-{uuid.uuid4().hex[:8]}"
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    sid = f"{schedule}-run-2026-12-07T08:51:00Z"

    async def started_by_schedule() -> None:
        client = await connect(cli.settings)
        await client.start_workflow(
            names.WORKFLOW_SESSION,
            StartSessionInput(agent_id=agent, goal="sched", schedule_id=schedule),
            id=sid,
            task_queue=f"nobody-{uuid.uuid4().hex}",  # no worker: never recorded
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(names.SA_AGENT, agent),
                    SearchAttributePair(names.SA_SCHEDULE, schedule),
                ]
            ),
        )

    asyncio.run(started_by_schedule())
    try:
        listed = poll(
            lambda: cli.vigil.json("list", "--schedule", schedule) or None, 15, "the run listed"
        )
        assert [(r["id"], r["status"]) for r in listed] == [(sid, "unrecorded")]
        unrecorded = cli.vigil.json("list", "--schedule", schedule, "--status", "unrecorded")
        assert [r["id"] for r in unrecorded] == [sid]
        other = cli.vigil.json("list", "--schedule", f"{schedule}-x", "--status", "unrecorded")
        assert other == []  # the filter holds for unrecorded runs too
    finally:
        cli.vigil("terminate", sid, "--reason", "test over")
