"""Archive, restore, sweeping and retention, reached through the `vigil` CLI.

`vigil archive` copies an ended session to the object store (``--prune``: moves it),
`vigil restore` brings it back identical, `vigil artifact sweep` removes objects the
database does not know. A retention policy per agent is run by the `vigil-retention`
Temporal Schedule: triggered with policies of 0 days, its workflow archives one agent's
ended sessions and erases another's, and leaves the others alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest
from temporalio.service import RPCError

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, poll, query, read_record
from tests.support.llm_stub import Reply
from tests.support.teststack import recreate_database
from vigil.schema import names
from vigil.schema.governance import RetentionRunResult
from vigil.workers.db import migrate
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration


def _session(cli: CLIStack, agent: str, label: str) -> str:
    goal = cli.plan(
        Reply.tool_call("write_artifact", {"name": "a.txt", "content": f"about {label}"}),
        Reply.tool_call("finish", {"summary": f"{label} done"}),
        label=label,
    )
    end = cli.vigil.json("start", goal, "--agent", agent, "--wait", timeout=120)
    assert end["status"] == "completed", end
    return str(end["id"])


def _hot(cli: CLIStack, session: str) -> list[tuple[int, str, str]]:
    _, transcript, _ = read_record(cli.database_url, session)
    return [(m.seq, m.role, m.content) for m in transcript]


def test_archive_copy_prune_and_restore(cli: CLIStack) -> None:
    session = _session(cli, f"arch-{uuid.uuid4().hex[:8]}", "archive me")
    before = _hot(cli, session)
    assert len(before) >= 4

    copy = cli.vigil.json("archive", session)
    assert copy["pruned"] is False and copy["messages"] == len(before)
    assert _hot(cli, session) == before

    moved = cli.vigil.json("archive", session, "--prune")
    assert moved["pruned"] is True and moved["sha256"] == copy["sha256"]  # same snapshot
    assert _hot(cli, session) == []
    again = cli.vigil.json("archive", session, "--prune")
    assert again["already_archived"] is True

    restored = cli.vigil.json("restore", session)
    assert restored["was_archived"] and restored["messages"] == len(before)
    assert _hot(cli, session) == before
    assert cli.vigil.json("restore", session)["was_archived"] is False
    # The restored archive copied nothing anyone refers to: it is gone from the store.
    rows = query(cli.database_url, "SELECT 1 FROM artifacts WHERE sha256 = :h", h=copy["sha256"])
    assert rows == []

    missing = cli.vigil("archive", f"nope-{uuid.uuid4().hex[:6]}")
    assert missing.returncode == 4, explain(missing)


def test_sweep_removes_only_old_objects_the_database_does_not_know(cli: CLIStack) -> None:
    _session(cli, f"sweep-{uuid.uuid4().hex[:8]}", "keep my artifact")
    orphan = f"an orphan {uuid.uuid4()}".encode()
    sha = hashlib.sha256(orphan).hexdigest()
    root = cli.settings.endpoints().artifact_dir
    path = root / "sha256" / sha[:2] / sha[2:4] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orphan)
    day_ago = time.time() - 2 * 86400
    os.utime(path, (day_ago, day_ago))

    dry = cli.vigil.json("artifact", "sweep", "--dry-run")
    assert dry["dry_run"] and sha in dry["orphan_objects"] and dry["removed"] == []
    assert path.exists()
    done = cli.vigil.json("artifact", "sweep")
    assert sha in done["removed"] and not path.exists()
    assert done["missing_objects"] == []  # every registered artifact still has its bytes


@pytest.fixture
def retention_schedule(cli: CLIStack) -> Iterator[None]:
    yield
    with contextlib.suppress(RPCError):  # not there: the test ended before creating it
        asyncio.run(_retention_schedule(cli, "delete"))


async def _retention_schedule(cli: CLIStack, op: str) -> None:
    """Trigger or delete `vigil-retention` in Temporal itself: `vigil schedule` operates
    goal schedules only."""
    handle = (await connect(cli.settings)).get_schedule_handle(names.SCHEDULE_RETENTION)
    await (handle.trigger() if op == "trigger" else handle.delete())


def test_the_retention_schedule_archives_and_erases_per_agent_policy(
    cli: CLIStack, retention_schedule: None
) -> None:
    tag = uuid.uuid4().hex[:8]
    archived_agent, erased_agent, kept_agent = f"ret-a-{tag}", f"ret-e-{tag}", f"ret-k-{tag}"
    archived = _session(cli, archived_agent, "to archive")
    erased = _session(cli, erased_agent, "to erase")
    kept = _session(cli, kept_agent, "to keep")
    kept_before = _hot(cli, kept)

    cli.vigil.ok("retention", "set", "--agent", archived_agent, "--archive-after", "0d")
    cli.vigil.ok(
        "retention", "set", "--agent", erased_agent, "--archive-after", "0d", "--erase-after", "0d"
    )
    shown = {p["agent_id"]: p for p in cli.vigil.json("retention", "show")}
    assert shown[archived_agent]["archive_after_seconds"] == 0
    assert shown[archived_agent]["erase_after_seconds"] is None
    assert shown[erased_agent]["erase_after_seconds"] == 0
    assert kept_agent not in shown
    human = cli.vigil.ok("retention", "show").stdout
    assert archived_agent in human and "0d" in human

    # vigil's own schedule is no goal: `vigil schedule` neither lists nor operates it.
    assert names.SCHEDULE_RETENTION not in {s["id"] for s in cli.vigil.json("schedule", "list")}
    for op in ("trigger", "delete", "pause"):
        refused = cli.vigil("schedule", op, names.SCHEDULE_RETENTION)
        assert refused.returncode == 4, explain(refused)
        assert one_error_line(refused) == "error: no schedule with id 'vigil-retention'"
    asyncio.run(_retention_schedule(cli, "trigger"))
    triggered = time.monotonic()

    def settled() -> bool:
        nonlocal triggered
        archived_row = query(
            cli.database_url, "SELECT archive_uri FROM sessions WHERE id = :s", s=archived
        )
        erased_rows = query(cli.database_url, "SELECT 1 FROM sessions WHERE id = :s", s=erased)
        done = bool(archived_row and archived_row[0]["archive_uri"]) and not erased_rows
        if not done and time.monotonic() - triggered > 15:
            # `vigil-retention` is one schedule for the whole namespace: a `retention set`
            # of another module's test points it at that module's task queue (whose worker
            # may be gone), and a run under way skips a trigger. Point it here, again.
            cli.vigil.ok("retention", "set", "--agent", archived_agent, "--archive-after", "0d")
            asyncio.run(_retention_schedule(cli, "trigger"))
            triggered = time.monotonic()
        return done

    poll(settled, 60, "the retention run archived and erased")
    assert _hot(cli, archived) == []
    [receipt] = cli.vigil.json("erasures", "--subject", erased)
    assert receipt["requested_by"] == "vigil-retention"
    assert erased_agent in (receipt["reason"] or "")
    assert _hot(cli, kept) == kept_before

    # The run that did it: its rows are written before its workflow completes, so an
    # earlier completed run (archiving nothing) could be all there was to read yet.
    poll(
        lambda: [r for r in _retention_runs(cli) if r["archived"] >= 1 and r["erased"] >= 1],
        30,
        "the retention workflow that archived and erased completed",
    )

    cli.vigil.ok("retention", "set", "--agent", archived_agent, "--clear")
    assert archived_agent not in {p["agent_id"] for p in cli.vigil.json("retention", "show")}


def test_a_retention_run_waiting_on_a_queue_no_worker_polls_does_not_stop_retention(
    cli: CLIStack, retention_schedule: None
) -> None:
    """`vigil-retention` was pointed at a task queue no worker polls (a `retention set` run
    where no worker was, or one whose worker is gone) and started a run there: under
    overlap skip that run, which nothing would ever take, skipped every later trigger, so
    retention stopped for good even after `retention set` pointed the schedule back. Now
    `retention set` ends a run of the schedule waiting on another queue, and says so; and
    it warns when no worker polls the queue it points the schedule at."""
    tag = uuid.uuid4().hex[:8]
    agent, gone = f"ret-stuck-{tag}", f"tq-gone-{tag}"
    session = _session(cli, agent, "to archive past a stuck run")
    elsewhere = cli.vigil(
        "retention", "set", "--agent", agent, "--archive-after", "0d",
        env={"VIGIL_TASK_QUEUE": gone},
    )  # fmt: skip
    assert elsewhere.returncode == 0, explain(elsewhere)
    assert f"warning: no worker is polling task queue {gone!r}" in elsewhere.stderr, explain(
        elsewhere
    )
    asyncio.run(_retention_schedule(cli, "trigger"))
    stuck = poll(lambda: asyncio.run(_running_retention_runs(cli)), 30, "a run waits")
    [waiting] = stuck

    back = cli.vigil("retention", "set", "--agent", agent, "--archive-after", "0d")
    assert back.returncode == 0, explain(back)
    assert "no worker is polling" not in back.stderr, explain(back)
    assert f"ended retention run {waiting}" in back.stderr, explain(back)
    assert gone in back.stderr, explain(back)
    ended = asyncio.run(_workflow_status(cli, waiting))
    assert ended == "TERMINATED", ended
    asyncio.run(_retention_schedule(cli, "trigger"))

    def archived() -> bool:
        row = query(cli.database_url, "SELECT archive_uri FROM sessions WHERE id = :s", s=session)
        return bool(row and row[0]["archive_uri"])

    poll(archived, 60, "the retention run on the polled queue archived the session")


async def _running_retention_runs(cli: CLIStack) -> list[str]:
    handle = (await connect(cli.settings)).get_schedule_handle(names.SCHEDULE_RETENTION)
    return [run.workflow_id for run in (await handle.describe()).info.running_actions]


async def _workflow_status(cli: CLIStack, workflow_id: str) -> str:
    described = await (await connect(cli.settings)).get_workflow_handle(workflow_id).describe()
    assert described.status is not None
    return described.status.name


def _retention_runs(cli: CLIStack) -> list[dict[str, object]]:
    """Results of the completed retention workflows."""

    async def go() -> list[dict[str, object]]:
        client = await connect(cli.settings)
        out = []
        async for wf in client.list_workflows(
            f"WorkflowType = '{names.WORKFLOW_RETENTION}' AND ExecutionStatus = 'Completed'"
        ):
            handle = client.get_workflow_handle(
                wf.id, run_id=wf.run_id, result_type=RetentionRunResult
            )
            result = await handle.result()
            out.append(json.loads(result.model_dump_json()))
        return out

    return asyncio.run(go())


def test_a_retention_schedule_too_frequent_or_a_policy_backwards_is_refused(
    cli: CLIStack,
) -> None:
    """``--every 0.5s`` ended in a traceback (Temporal refused the interval) after the
    policy was written; ``--every 0s`` became an hour without a word; an archive after the
    erasure was taken."""
    agent = f"ret-odd-{uuid.uuid4().hex[:8]}"
    for every in ("0.5s", "0s", "30s"):
        refused = cli.vigil("retention", "set", "--agent", agent, "--erase-after", "1d",
                            "--every", every)  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert "--every must be at least 1 minute" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    backwards = cli.vigil(
        "retention", "set", "--agent", agent, "--archive-after", "10d", "--erase-after", "5d"
    )
    assert backwards.returncode == 2, backwards.stderr
    assert "--archive-after must not be longer than --erase-after" in backwards.stderr
    assert all(p["agent_id"] != agent for p in cli.vigil.json("retention", "show"))


def test_retention_show_with_no_policy_says_so(cli: CLIStack) -> None:
    """A database where no agent has a policy (one of the test's own): `retention show`
    says every session is kept and how to set one, not an empty table."""
    name = f"vigil_test_no_policy_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = asyncio.run(recreate_database(cli.database_url, name))
    try:
        asyncio.run(migrate(url))
        env = {"DATABASE_URL": url}
        shown = cli.vigil.ok("retention", "show", env=env).stdout
        assert "no retention policies: every session is kept" in shown, shown
        assert "vigil retention set --agent NAME" in shown
        assert cli.vigil.json("retention", "show", env=env) == []
    finally:
        asyncio.run(recreate_database(cli.database_url, name, drop_only=True))
