"""A session on a task queue no worker polls: vigil says so at once, with the command that
starts a worker, instead of waiting in the dark; `list` shows the session, `doctor` fails
its worker check until a worker polls, then the session runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import WorkerProcess, explain, one_error_line, poll, wait_recorded
from tests.support.llm_stub import Reply
from vigil.activities.record.erasure import SubjectKind, write_receipt
from vigil.activities.record.rls import record_maintenance
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.liveness import live_pollers
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration


def _worker_check(doctor: dict[str, object] | list[dict[str, object]]) -> dict[str, object]:
    assert isinstance(doctor, list)
    found = [c for c in doctor if str(c["check"]).startswith("workers on task queue")]
    assert len(found) == 1, doctor
    return found[0]


@pytest.mark.timeout(600)  # a dozen CLI start-ups and a worker, on a shared machine
def test_no_worker_is_said_at_once(cli: CLIStack, tmp_path_factory: pytest.TempPathFactory) -> None:
    queue = f"tq-nobody-{uuid.uuid4().hex[:8]}"
    env = {"VIGIL_TASK_QUEUE": queue}
    expected_hint = "start one with `vigil worker`"
    goal = cli.plan(Reply.tool_call("finish", {"summary": "ran once a worker came"}))

    follow = cli.vigil("start", goal, "--agent", "lonely", "--follow", env=env)
    assert follow.returncode == 3, explain(follow)
    sid = follow.stdout.split("started ", 1)[1].split()[0]
    line = one_error_line(follow)
    assert line == (
        f"error: no worker is polling task queue {queue!r}, so session {sid} has no record "
        f"and waits; {expected_hint}"
    ), line

    # A plain start succeeds, and says on stderr why the session will wait.
    second = cli.plan(Reply.tool_call("finish", {"summary": "the second ran too"}))
    plain = cli.vigil("start", second, "--agent", "lonely", env=env)
    assert plain.returncode == 0, explain(plain)
    assert plain.stdout.startswith("started "), explain(plain)
    assert f"no worker is polling task queue {queue!r}" in plain.stderr, explain(plain)
    assert expected_hint in plain.stderr, explain(plain)

    pause, approve, show = cli.vigil.many(
        ("pause", sid, "--by", "ana"), ("approve", sid, "a1-0"), ("show", sid), env=env, timeout=180
    )
    for done, what in ((pause, "pause"), (approve, "approve")):
        assert done.returncode == 3, explain(done)
        assert one_error_line(done) == (
            f"error: no worker is polling task queue {queue!r}, so session {sid} cannot take "
            f"the {what}; {expected_hint}"
        ), explain(done)
    assert show.returncode == 3, explain(show)
    assert expected_hint in one_error_line(show)

    listed = cli.vigil.json("list", "--agent", "lonely", env=env)
    mine = [r for r in listed if r["id"] == sid]
    assert len(mine) == 1, listed
    assert mine[0]["status"] == "unrecorded" and mine[0]["recorded"] is False
    assert mine[0]["goal"] == goal and mine[0]["temporal_status"] == "running"
    assert datetime.fromisoformat(mine[0]["created_at"]).tzinfo is not None
    assert "T" in mine[0]["created_at"]  # ISO 8601, as the export and the API write times
    human = cli.vigil("list", "--agent", "lonely", env=env)
    assert sid in human.stdout and "unrecorded" in human.stdout, explain(human)

    doctor = cli.vigil("doctor", "--json", env=env)
    assert doctor.returncode == 1, explain(doctor)
    check = _worker_check(json.loads(doctor.stdout))
    assert check["ok"] is False
    assert check["detail"] == (
        f"no worker is polling task queue {queue!r}, so sessions cannot run; "
        "start one with `vigil worker`"
    )

    # The command it names works: the session runs and doctor's check passes.
    log = tmp_path_factory.mktemp("lonely") / "worker.log"
    worker = WorkerProcess({**cli.vigil.env, **env}, log).start()
    try:
        row = wait_recorded(cli.database_url, sid, "completed")
        assert row.summary == "ran once a worker came"
        after = cli.vigil("doctor", "--json", env=env)
        assert _worker_check(json.loads(after.stdout))["ok"] is True, explain(after)
        assert sid not in [r["id"] for r in cli.vigil.json("list", "--status", "unrecorded")]
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]


def test_other_queue_names_its_worker_command(cli: CLIStack) -> None:
    """A session started on another queue than the configured one: the command names it."""
    queue = f"tq-other-{uuid.uuid4().hex[:8]}"
    goal = cli.plan(Reply.tool_call("finish", {"summary": "x"}))
    sid = cli.vigil.json("start", goal, "--agent", "lonely", env={"VIGIL_TASK_QUEUE": queue})["id"]
    done = cli.vigil("say", sid, "hello")  # the CLI's configured queue is the module's
    assert done.returncode == 3, explain(done)
    assert one_error_line(done).endswith(f"start one with `vigil worker --task-queue {queue}`"), (
        explain(done)
    )
    cli.vigil.ok("cancel", sid)


def test_a_worker_that_just_stopped_is_said_not_to_take_the_session(
    cli: CLIStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Temporal lists a stopped worker as polling for about two minutes: a session started
    then is not taken, and `start --follow` says so (exit 3), not that the session it
    just started is unknown."""
    queue = f"tq-gone-{uuid.uuid4().hex[:8]}"
    env = {"VIGIL_TASK_QUEUE": queue}
    log = tmp_path_factory.mktemp("gone") / "worker.log"
    worker = WorkerProcess({**cli.vigil.env, **env}, log).start()
    try:
        # Temporal lists a worker once its first poll has reached the server.
        poll(lambda: asyncio.run(_polled(cli, queue)), 30, "the worker's poll is listed")
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    goal = cli.plan(Reply.tool_call("finish", {"summary": "x"}))
    follow = cli.vigil("start", goal, "--agent", "lonely", "--follow", env=env, timeout=120)
    assert follow.returncode == 3, explain(follow)
    sid = follow.stdout.split("started ", 1)[1].split()[0]
    line = one_error_line(follow)
    assert line.startswith(f"error: session {sid} is started but no worker has taken it"), line
    assert "`vigil doctor`" in line, line
    cli.vigil.ok("cancel", sid)


def test_a_session_that_ended_before_it_was_recorded_is_said_at_once(cli: CLIStack) -> None:
    """Terminated before any worker took it: `follow` (and the API's stream) said nothing
    for 15 s and then that no worker had taken it; it says what happened, at once."""
    queue = f"tq-never-{uuid.uuid4().hex[:8]}"
    env = {"VIGIL_TASK_QUEUE": queue}
    goal = cli.plan(Reply.tool_call("finish", {"summary": "x"}))
    sid = cli.vigil.json("start", goal, "--agent", "lonely", env=env)["id"]
    asyncio.run(_terminate(cli, sid))
    follow = cli.vigil("follow", sid, env=env)
    assert follow.returncode == 4, explain(follow)
    assert one_error_line(follow) == (
        f"error: session {sid!r} ended (terminated) before anything was recorded"
    )


@pytest.mark.parametrize("erased", ["session", "agent"])
def test_a_session_erased_while_temporal_still_deletes_it_is_no_session(
    cli: CLIStack, erased: SubjectKind
) -> None:
    """Erasing asks Temporal to delete a session's runs (Temporal terminates a running one
    as it deletes it), then removes the record. A follower that looked between the two (Temporal's
    deletion runs in the background) was told the session "ended (terminated) before
    anything was recorded" (a follow of a session erased meanwhile, now and then): it was
    erased."""
    queue = f"tq-never-{uuid.uuid4().hex[:8]}"
    env = {"VIGIL_TASK_QUEUE": queue}
    agent = f"erased-{uuid.uuid4().hex[:8]}"
    goal = cli.plan(Reply.tool_call("finish", {"summary": "x"}))
    sid = cli.vigil.json("start", goal, "--agent", agent, env=env)["id"]
    asyncio.run(_terminate(cli, sid, reason="erased"))
    asyncio.run(_receipt(cli, erased, sid if erased == "session" else agent))
    follow = cli.vigil("follow", sid, env=env)
    assert follow.returncode == 4, explain(follow)
    assert one_error_line(follow) == f"error: no session with id {sid!r}: it was erased"


async def _receipt(cli: CLIStack, kind: SubjectKind, subject: str) -> None:
    engine = make_engine(cli.database_url)
    try:
        async with make_sessionmaker(engine).begin() as db:
            await record_maintenance(db)
            await write_receipt(
                db,
                kind=kind,
                subject=subject,
                by="test",
                reason=None,
                counts={},
            )
    finally:
        await engine.dispose()


async def _terminate(cli: CLIStack, session_id: str, reason: str = "test") -> None:
    client = await connect(cli.settings)
    await client.get_workflow_handle(session_id).terminate(reason=reason)


async def _polled(cli: CLIStack, task_queue: str) -> bool:
    client = await connect(cli.settings)
    return bool(await live_pollers(client, task_queue))
