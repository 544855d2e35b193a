"""Steering a running session through the `vigil` CLI: pause holds it before its next model
call, `say` and `redirect` reach the model, `resume` continues it, `reject` tells the model
why, `cancel` ends it; every action is recorded with who and why."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import (
    LineReader,
    explain,
    one_error_line,
    poll,
    read_record,
    requests_for,
    terminate_session,
    wait_approval,
    wait_recorded,
)
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration


def agent() -> str:
    return f"ops-{uuid.uuid4().hex[:8]}"


def test_pause_say_redirect_resume(cli: CLIStack) -> None:
    """A paused session holds before its next model call; what was said and the new goal
    reach the model once it is resumed; every action is recorded with who and why."""
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}),
        Reply.tool_call("finish", {"summary": "counted"}),
    )
    sid = cli.vigil.json("start", goal, "--agent", agent(), "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")

    ack = cli.vigil.json("pause", sid, "--reason", "lunch", "--by", "ana")
    assert ack["accepted"] is True and ack["message"] == "paused"
    assert cli.vigil.json("say", sid, "also check disk usage", "--by", "ana")["accepted"]
    redirected = cli.vigil("redirect", sid, "count the files instead", "--by", "ana", "--json")
    assert redirected.returncode == 0 and json.loads(redirected.stdout)["accepted"]
    # The approval asked for the old goal still waits: said, with how to refuse it.
    assert "note: approval a1-0 (http_fetch) was asked for the old goal" in redirected.stderr
    assert f"reject {sid} a1-0" in redirected.stderr, redirected.stderr
    cli.vigil.ok("approve", sid, "a1-0", "--by", "ana")

    wait_recorded(cli.database_url, sid, "paused")
    shown = cli.vigil.json("show", sid)
    assert shown["state"]["paused"] is True and shown["state"]["status"] == "paused"
    assert shown["session"]["goal"] == "count the files instead"
    assert len(requests_for(cli.stub, goal)) == 1, "a paused session called the model"
    human = cli.vigil.ok("show", sid).stdout
    live = next(ln for ln in human.splitlines() if ln.split()[1:2] == ["live"])
    assert "paused, run 1" in live and "paused, paused" not in live, live  # said once

    ack = cli.vigil.json("resume", sid, "--by", "ana")
    assert ack["accepted"] is True and ack["message"] == "resumed"
    wait_recorded(cli.database_url, sid, "completed")

    second = requests_for(cli.stub, goal)[1].body["messages"]
    users = [m["content"] for m in second if m["role"] == "user"]
    assert users == [goal, "also check disk usage", "New goal from ana: count the files instead"]
    _, _, events = read_record(cli.database_url, sid)
    by_kind = {e.kind: e for e in events}
    assert by_kind["session_paused"].actor == "ana" and by_kind["session_paused"].reason == "lunch"
    assert by_kind["session_resumed"].actor == "ana"
    assert by_kind["session_redirected"].payload["new_goal"] == "count the files instead"
    assert by_kind["human_message"].actor == "ana"


def test_show_says_paused_while_an_approval_waits(cli: CLIStack) -> None:
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    sid = cli.vigil.json("start", goal, "--agent", agent(), "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    paused = cli.vigil.ok("pause", sid, "--reason", "lunch", "--by", "ana")
    # Said once: the approval still waits, and the session will hold after it.
    assert paused.stdout.strip() == "pause: paused (status waiting_approval)", explain(paused)
    shown = cli.vigil.ok("show", sid)
    status = next(ln for ln in shown.stdout.splitlines() if ln.split()[1:2] == ["status"])
    assert "paused (approval a1-0 pending)" in status, shown.stdout
    # The JSON keeps the record's status and the live state as they are.
    live = next(ln for ln in shown.stdout.splitlines() if ln.split()[1:2] == ["live"])
    assert "waiting_approval, paused, run 1" in live, shown.stdout
    state = cli.vigil.json("show", sid)["state"]
    assert state["paused"] is True and [a["approval_id"] for a in state["pending_approvals"]] == [
        "a1-0"
    ]
    cli.vigil.ok("cancel", sid)


def test_reject_with_reason(cli: CLIStack) -> None:
    # A long URL: `approvals` cut the arguments at a word, and the URL went whole.
    url = "http://127.0.0.1:9/nope/" + "a" * 150
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": url}),
        Reply.text("understood, not fetching"),
    )
    who = agent()
    sid = cli.vigil.json("start", goal, "--agent", who, "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    # The approvals that wait, across sessions, with what answers them (the API had it).
    (waiting,) = cli.vigil.json("approvals", "--agent", who)
    assert (waiting["session_id"], waiting["approval_id"], waiting["tool"]) == (
        sid,
        "a1-0",
        "http_fetch",
    )
    listed = cli.vigil.ok("approvals", "--agent", who, env={"COLUMNS": "600"}).stdout
    assert sid in listed and f"approve {sid} a1-0" in listed, listed
    assert "http://127.0.0.1:9/nope/aaa" in listed, listed
    ack = cli.vigil.json("reject", sid, "a1-0", "--reason", "not that host", "--by", "ana")
    assert ack["accepted"] is True and ack["message"] == "rejected a1-0"
    wait_recorded(cli.database_url, sid, "completed")
    assert cli.vigil.json("approvals", "--agent", who) == []
    _, transcript, _ = read_record(cli.database_url, sid)
    tool = next(m for m in transcript if m.role == "tool")
    assert tool.content == "error: rejected by ana: not that host"
    # The model was told why on its next call.
    second = requests_for(cli.stub, goal)[1].body["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["content"] == tool.content


def test_cancel(cli: CLIStack) -> None:
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    who = agent()
    sid = cli.vigil.json("start", goal, "--agent", who, "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    cancelled = cli.vigil.json("cancel", sid, "--by", "ana")
    assert cancelled == {"id": sid, "cancel": "requested", "by": "ana", "reason": ""}
    wait_recorded(cli.database_url, sid, "cancelled")
    listed = poll(
        lambda: [
            r for r in cli.vigil.json("list", "--agent", who) if r["temporal_status"] == "canceled"
        ],
        30,
        "Temporal says canceled",
    )
    assert [r["id"] for r in listed] == [sid]
    _, transcript, _ = read_record(cli.database_url, sid)
    assert transcript[-1].content.startswith("Session ended: cancelled")
    # The tool call left open by the cancel is answered, so the transcript stays whole.
    assert transcript[-2].role == "tool" and "not run" in transcript[-2].content

    again = cli.vigil("cancel", sid)
    assert again.returncode == 2, explain(again)
    # Said as the record says it (`cancelled`), not in Temporal's spelling.
    assert "has already ended (cancelled)" in one_error_line(again)


def test_a_cancel_no_worker_will_carry_out_says_so(cli: CLIStack) -> None:
    """`vigil cancel` of a session on a queue nobody polls printed "cancel requested" and
    nothing else, while the session stayed running until some worker took it."""
    queue = f"tq-nobody-{uuid.uuid4().hex[:8]}"
    env = {"VIGIL_TASK_QUEUE": queue}
    sid = cli.vigil.json("start", "waits for a worker", "--agent", agent(), env=env)["id"]
    try:
        done = cli.vigil("cancel", sid, "--by", "ana", env=env)
    finally:
        terminate_session(cli.settings, sid)
    assert done.returncode == 0, explain(done)
    assert done.stdout.strip() == f"cancel requested for {sid}"
    said = " ".join(done.stderr.split())
    assert f"warning: no worker is polling task queue '{queue}'" in said, said
    assert f"session {sid} ends cancelled only once one takes it" in said, said


def test_terminate_ends_what_no_worker_takes_and_a_running_session_with_its_record(
    cli: CLIStack,
) -> None:
    """A session no worker took could be ended only with Temporal's own CLI; one that is
    stuck, the same. `vigil terminate` ends either and closes its record."""
    env = {"VIGIL_TASK_QUEUE": f"tq-nobody-{uuid.uuid4().hex[:8]}"}
    never = cli.vigil.json("start", "waits for a worker", "--agent", agent(), env=env)["id"]
    asked = cli.vigil("terminate", never, env=env, input="n\n")
    assert asked.returncode == 1, explain(asked)
    assert "error: not terminated: answer y, or give --yes" in asked.stderr
    done = cli.vigil.json("terminate", never, "--yes", "--by", "ana", env=env)
    assert done == {"id": never, "terminated": True, "status": None}
    again = cli.vigil("terminate", never, "--yes", env=env)
    assert again.returncode == 2 and "has already ended" in one_error_line(again)

    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    sid = cli.vigil.json("start", goal, "--agent", agent(), "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    ended = cli.vigil.json("terminate", sid, "--yes", "--by", "ana", "--reason", "stuck")
    assert ended["status"] == "terminated", ended
    row, _, _ = read_record(cli.database_url, sid)
    assert row.status == "terminated" and row.finished_at is not None
    assert "stuck (by ana)" in (row.summary or ""), row.summary


def test_show_says_how_to_answer_a_question_of_the_agent(cli: CLIStack) -> None:
    """`ask_human` waited for a reply with no word of how to give one (`show` said only
    "waiting for: a human reply to: ...")."""
    goal = cli.plan(
        Reply.tool_call("ask_human", {"question": "Which colour?"}),
        Reply.tool_call("finish", {"summary": "blue it is"}),
    )
    sid = cli.vigil.json("start", goal, "--agent", agent())["id"]
    wait_recorded(cli.database_url, sid, "waiting_human")
    shown = cli.vigil.ok("show", sid)
    rows = {
        cells[1].strip(): cells[2].strip()
        for ln in shown.stdout.splitlines()
        if len(cells := ln.split("│")) == 4
    }
    assert rows["waiting for"] == "a human reply to: Which colour?", shown.stdout
    assert rows["answer with"].endswith(f" say {sid} 'YOUR ANSWER'"), shown.stdout
    assert "paused=" not in shown.stdout  # Python's spelling of a field, in a person's view
    with LineReader(cli.vigil.popen("follow", sid)) as follow:
        # `follow` says it where the question shows, as it does for an approval.
        cli.vigil.ok("say", sid, "blue", "--by", "ana")
        code, lines, stderr = follow.finish(60)
    assert code == 0, stderr
    asked = next(i for i, ln in enumerate(lines) if "ask_human(" in ln)
    assert lines[asked + 1].strip().endswith(f"say {sid} 'YOUR ANSWER'"), lines
    # The turn of a tool call only says so on its line (it was an empty header).
    assert lines[asked - 1].strip().endswith("assistant (calls tools)"), lines
    wait_recorded(cli.database_url, sid, "completed")
    _, transcript, _ = read_record(cli.database_url, sid)
    assert any(m.role == "tool" and "blue" in m.content for m in transcript), transcript
