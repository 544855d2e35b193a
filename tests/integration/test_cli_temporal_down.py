"""Temporal down, PostgreSQL up: what needs Temporal says so in one whole line (and how to
start it); what PostgreSQL alone can serve is served, and `show` marks its live state as
unavailable."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, wait_approval, wait_recorded
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration

DEAD = "127.0.0.1:1"
DOWN = {"TEMPORAL_ADDRESS": DEAD}
LINE = (
    f"error: Temporal at {DEAD} is not answering; start it with `vigil stack up` "
    "(or check TEMPORAL_ADDRESS)"
)


@pytest.mark.timeout(600)  # about twenty CLI start-ups, on a shared 2-core machine
def test_postgres_alone_serves_what_it_can(cli: CLIStack) -> None:
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}),
        Reply.tool_call("finish", {"summary": "fetched"}),
    )
    sid = cli.vigil.json("start", goal, "--agent", "downtime", "--approve-tools", "http_fetch")[
        "id"
    ]
    wait_approval(cli.database_url, sid, "a1-0")

    show_json, human, export, search, memory, artifacts, listed = cli.vigil.many(
        ("show", sid, "--json"),
        ("show", sid),
        ("export", sid),
        ("search", "goal", "--agent", "downtime", "--json"),
        ("memory", "search", "anything", "--agent", "downtime", "--json"),
        ("artifact", "list", sid, "--json"),
        ("list", "--agent", "downtime", "--json"),
        env=DOWN,
        timeout=400,  # five Python start-ups side by side on a shared machine
    )
    for done in (show_json, human, export, search, memory, artifacts, listed):
        assert done.returncode == 0, explain(done)
    show = json.loads(show_json.stdout)
    assert show["session"]["id"] == sid and show["session"]["status"] == "waiting_approval"
    assert show["state"] is None
    assert show["state_unavailable"] == "unavailable: " + LINE.removeprefix("error: ")
    assert "live" in human.stdout and "is not answering" in human.stdout, explain(human)
    # Under `uv run`, the command it names is written as the CLI was started (it said
    # `vigil stack up` there too).
    under_uv = cli.vigil("show", sid, "--json", env={**DOWN, "UV": "/usr/bin/uv"}, timeout=120)
    said = json.loads(under_uv.stdout)["state_unavailable"]
    assert "start it with `uv run vigil stack up`" in said, said
    assert sid in export.stdout
    assert any(r["id"] == sid for r in json.loads(listed.stdout))

    needs = [
        ("approve", sid, "a1-0"),
        ("pause", sid),
        ("say", sid, "hi", "--signal"),
        ("start", "a goal"),
    ]
    for args, done in zip(needs, cli.vigil.many(*needs, env=DOWN, timeout=400), strict=True):
        assert done.returncode == 3, (args, explain(done))
        assert one_error_line(done) == LINE, (args, explain(done))

    doctor = cli.vigil("doctor", "--json", env=DOWN)
    assert doctor.returncode == 1, explain(doctor)
    reach = [c for c in json.loads(doctor.stdout) if c["check"] == "reachable"]
    assert reach[0]["detail"] == LINE.removeprefix("error: ")

    cli.vigil.ok("approve", sid, "a1-0")
    wait_recorded(cli.database_url, sid, "completed")
