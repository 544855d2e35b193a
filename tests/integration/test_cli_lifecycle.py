"""A session's life through the `vigil` CLI, as a user lives it: start (id and UI link),
follow (streamed live until the end), list, show, approve (an edited update and a plain
signal), start --wait and history."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import LineReader, explain, poll, read_record, wait_approval
from tests.support.llm_stub import Reply
from tests.support.teststack import TEST_PORTS

pytestmark = pytest.mark.integration


def agent() -> str:
    return f"ops-{uuid.uuid4().hex[:8]}"


def test_start_follow_and_approve(cli: CLIStack) -> None:
    """`start` prints the id and UI link; `follow` streams while the session waits; an
    edited approval (update) and a plain one (signal) let it finish; `follow` then ends."""
    url = cli.stub.url
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{url}/first"}),
        Reply.tool_call("http_fetch", {"url": f"{url}/second"}),
        Reply.tool_call("finish", {"summary": "fetched both"}),
    )
    who = agent()
    started = cli.vigil.json("start", goal, "--agent", who, "--approve-tools", "http_fetch")
    sid = started["id"]
    assert sid.startswith(f"{who}-")
    assert (
        started["ui"]
        == f"http://127.0.0.1:{TEST_PORTS['temporal_ui_port']}/namespaces/default/workflows/{sid}"
    )

    with LineReader(cli.vigil.popen("follow", sid, "--json")) as follow:
        wait_approval(cli.database_url, sid, "a1-0")
        state = cli.vigil.json("show", sid)["state"]
        assert state["status"] == "waiting_approval"
        [approval] = state["pending_approvals"]
        assert approval["approval_id"] == "a1-0" and approval["tool"] == "http_fetch"
        assert "/first" in approval["arguments_preview"]

        # Live: the tool call is streamed while the session still waits for a human.
        poll(
            lambda: any(json.loads(ln).get("seq") == 1 for ln in follow.snapshot()),
            30,
            "follow prints the assistant's tool call",
        )
        assert follow.proc.poll() is None, "follow ended before the session did"
        listed = cli.vigil.json("list", "--agent", who, "--status", "waiting_approval")
        assert [r["id"] for r in listed] == [sid]
        assert listed[0]["temporal_status"] == "running"

        edit = json.dumps({"url": f"{url}/edited"})
        ack = cli.vigil.json(
            "approve", sid, "a1-0", "--edit", edit, "--by", "ana", "--note", "use the edited page"
        )
        # The status after the approval, not the one it ends.
        assert ack == {
            "accepted": True,
            "status": "running",
            "message": "approved a1-0",
            "paused": False,
            "queued": False,
        }
        wait_approval(cli.database_url, sid, "a2-0")
        assert cli.vigil.json("approve", sid, "a2-0", "--signal", "--by", "bob") == {"sent": True}

        code, lines, stderr = follow.finish(60)
        assert code == 0, stderr
        *items, end = [json.loads(ln) for ln in lines]
        assert end == {
            "type": "end",
            "id": sid,
            "status": "completed",
            "summary": "fetched both",
            "steps": 3,
        }
        messages = [m for m in items if m["type"] == "message"]
        # Each approval request comes after the assistant message whose tool call asked
        # for it, with the commands that answer it.
        approvals = [(i, a) for i, a in enumerate(items) if a["type"] == "approval"]
        assert [a["approval_id"] for _, a in approvals] == ["a1-0", "a2-0"]
        for i, a in approvals:
            asked = next(
                j
                for j, m in enumerate(items)
                if m["type"] == "message" and m["role"] == "assistant" and m["step"] == a["step"]
            )
            assert asked < i, items
            assert a["tool"] == "http_fetch" and a["approve"].endswith(f"{sid} {a['approval_id']}")
        assert [m["seq"] for m in messages] == list(range(len(messages)))
        tools = [m for m in messages if m["role"] == "tool"]
        assert "GET /edited" in tools[0]["content"], tools[0]  # the edited arguments ran
        assert tools[0]["content"].startswith("[run with arguments edited by ana: "), tools[0]
        assert "GET /second" in tools[1]["content"], tools[1]
        assert messages[-1]["content"] == "Session ended: completed. fetched both"

    row, transcript, events = read_record(cli.database_url, sid)
    assert row.status == "completed"
    assert [(m.seq, m.role, m.content) for m in transcript] == [
        (m["seq"], m["role"], m["content"]) for m in messages
    ]
    decided = {e.payload["approval_id"]: e for e in events if e.kind == "approval_decided"}
    assert decided["a1-0"].actor == "ana" and decided["a1-0"].reason == "use the edited page"
    assert decided["a1-0"].payload["edited_arguments"] == {"url": f"{url}/edited"}
    assert decided["a2-0"].actor == "bob" and decided["a2-0"].payload["decision"] == "approve"


def test_start_wait_says_why_a_session_failed(cli: CLIStack) -> None:
    """`--wait` printed "ended: failed after 1 steps" and no reason, where `--json` gave
    the summary."""
    goal = cli.plan(Reply.tool_call("finish", {"summary": "the disk is gone", "succeeded": False}))
    done = cli.vigil("start", goal, "--agent", agent(), "--wait")
    assert done.returncode == 1, explain(done)
    lines = done.stdout.splitlines()
    assert lines[-2].endswith(" ended: failed after 1 step"), done.stdout
    assert lines[-1] == "  the disk is gone", done.stdout


def test_start_wait_show_and_history(cli: CLIStack) -> None:
    goal = cli.plan(Reply.tool_call("recall", {"query": "disk"}), Reply.text("all good"))
    done = cli.vigil("start", goal, "--agent", agent(), "--wait", "--json")
    assert done.returncode == 0, explain(done)
    end = json.loads(done.stdout)
    sid = end["id"]
    assert end == {
        "type": "end",
        "id": sid,
        "status": "completed",
        "summary": "all good",
        "steps": 2,
    }

    show_json, show, history_json, history = cli.vigil.many(
        ("show", sid, "--json"), ("show", sid), ("history", sid, "--json"), ("history", sid)
    )
    for done in (show_json, show, history_json, history):
        assert done.returncode == 0, explain(done)
    shown = json.loads(show_json.stdout)
    assert shown["session"]["status"] == "completed" and shown["session"]["step"] == 2
    assert shown["state"] is None  # an ended session is shown from the record
    assert [m["role"] for m in shown["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "system",
    ]
    assert "completed" in show.stdout and "all good" in show.stdout

    lines = json.loads(history_json.stdout)
    details = [ln["detail"] for ln in lines]
    # Times carry their offset, as every other --json time does (they had none).
    assert all(ln["time"].endswith("+00:00") for ln in lines), lines[0]
    assert lines[0]["kind"] == "workflow_execution_started"
    assert lines[-1]["kind"] == "workflow_execution_completed"
    # Step 1's model activity, and step 2's unless step 1's took it too (a step batch).
    models = [d for d in details if d.startswith("vigil.call_model — ")]
    step_1 = ["vigil.call_model — step 1: model"]
    assert models in (step_1, [*step_1, "vigil.call_model — step 2: model"]), details
    summary = "vigil.record — record 1 messages, 1 events, remember the outcome"
    assert summary in details, (summary, [d for d in details if d])
    # The record is a local activity (one marker in Temporal's history): shown as what ran,
    # in the summary for people too.
    [record_line] = [ln for ln in lines if ln["detail"].startswith("vigil.record")]
    assert record_line["kind"] == "local_activity"
    assert "remember the outcome" in history.stdout
    # the session was opened by step 1's model activity, not an activity of its own
    assert not any(d.startswith("vigil.open_session") for d in details), details
    # recall needs no approval: it ran inside step 1's model activity (a folded step)
    assert not any(d.startswith("vigil.run_tool") for d in details), details
    assert "step 1: model" in history.stdout


def test_start_wait_says_a_session_terminated_elsewhere_was_terminated(cli: CLIStack) -> None:
    """A session terminated outside `vigil` (Temporal UI, the `temporal` CLI) while `start
    --wait` waited on it: it printed "ended: running" and exited 0, reading the record
    nothing had closed yet."""
    from temporalio.client import Client

    from vigil.workers.temporal import connect

    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/never"}))
    sid = f"terminated-{uuid.uuid4().hex[:8]}"
    waiting = cli.vigil.popen(
        "start", goal, "--agent", agent(), "--id", sid, "--approve-tools", "http_fetch",
        "--wait", "--json",
    )  # fmt: skip
    wait_approval(cli.database_url, sid, "a1-0")

    async def terminate() -> None:
        client: Client = await connect(cli.settings)
        await client.get_workflow_handle(sid).terminate(reason="stopped from Temporal UI")

    asyncio.run(terminate())
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1, (out, err)
    assert json.loads(out)["status"] == "terminated", out


def test_list_past_the_records_page_is_refused_not_cut(cli: CLIStack) -> None:
    """`list --limit 900` listed 500 sessions at most (the record's page), unsaid; `schedule
    runs` said it showed every run and stopped at 100."""
    refused = cli.vigil("list", "--limit", "501")
    assert refused.returncode == 2, explain(refused)
    assert "500" in refused.stderr, explain(refused)
    refused = cli.vigil("schedule", "runs", "nightly", "--limit", "501")
    assert refused.returncode == 2, explain(refused)
