"""`list --limit N` shows at most N sessions, counting the ones no worker has recorded yet;
a limit under 1 is bad input."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, poll, wait_recorded
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration


def test_the_limit_counts_unrecorded_sessions(cli: CLIStack) -> None:
    agent = f"lim-{uuid.uuid4().hex[:8]}"
    done_ids = []
    for _ in range(2):
        goal = cli.plan(Reply.tool_call("finish", {"summary": "done"}))
        sid = cli.vigil.json("start", goal, "--agent", agent)["id"]
        wait_recorded(cli.database_url, sid, "completed")
        done_ids.append(sid)
    queue = f"tq-nobody-{uuid.uuid4().hex[:8]}"
    goal = cli.plan(Reply.tool_call("finish", {"summary": "never runs"}))
    waiting = cli.vigil.json("start", goal, "--agent", agent, env={"VIGIL_TASK_QUEUE": queue})["id"]
    try:
        # Temporal's visibility shows the waiting session a moment after its start.
        everything = poll(
            lambda: (rows := cli.vigil.json("list", "--agent", agent)) and len(rows) == 3 and rows,
            what="three sessions listed",
        )
        assert {r["id"] for r in everything} == {*done_ids, waiting}
        for limit in (1, 2):
            rows = cli.vigil.json("list", "--agent", agent, "--limit", str(limit))
            assert [r["id"] for r in rows] == [r["id"] for r in everything][:limit], rows
    finally:
        cli.vigil.ok("cancel", waiting)


def test_a_limit_under_one_is_bad_input(cli: CLIStack) -> None:
    calls = [
        ("list", "--limit", "-5"),
        ("list", "--limit", "0"),
        ("search", "anything", "--limit", "0"),
        ("erasures", "--limit", "-1"),
    ]
    for done in cli.vigil.many(*calls):
        assert done.returncode == 2, explain(done)
        assert "Invalid value for '--limit'" in one_error_line(done), explain(done)
