"""Human actions come in the order they happened.

An approval's decision is written before the call it approved runs
(``vigil-decision-first``): the record's own order (ids, and so the API's stream) has the
decision before the tool's result. Sessions from before that wrote it with the session's
next record, after the approved tool ran. Messages people send while a session waits are
the next step's input, written with it. `follow` (text and JSON) and `export` show the
decision before the tool's result either way, and human_actions_view's ``at`` is the
action's own time, so ``ORDER BY at`` orders them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import LineReader, explain, query, wait_approval
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration


def _said(item: dict[str, Any]) -> str:
    kind = item.get("type", "end")
    if kind == "event":
        return str(item["kind"])
    if kind == "approval":
        return "approval_requested"
    if kind == "message":
        return f"message:{item['role']}"
    return str(kind)


@pytest.mark.timeout(300)
def test_decision_before_its_tool_result_and_actions_by_their_own_time(cli: CLIStack) -> None:
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/page"}),
        Reply.text("fetched it"),
    )
    agent = f"order-{uuid.uuid4().hex[:8]}"
    sid = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")["id"]

    with LineReader(cli.vigil.popen("follow", sid, "--json")) as live:
        wait_approval(cli.database_url, sid, "a1-0")
        cli.vigil.ok("say", sid, "first thought", "--by", "dave")
        cli.vigil.ok("say", sid, "second thought", "--by", "dave")
        cli.vigil.ok("approve", sid, "a1-0", "--by", "ana", "--note", "go")
        code, lines, stderr = live.finish(120)
    assert code == 0, stderr
    *items, end = [json.loads(ln) for ln in lines]
    assert end["status"] == "completed", end
    assert end["type"] == "end", end  # every line has a type

    # follow --json, live: the decision, then the tool's result.
    order = [_said(i) for i in items]
    assert order.index("approval_decided") < order.index("message:tool"), order
    assert order.index("approval_requested") < order.index("approval_decided"), order

    # follow (text), read after the end from the record.
    text = cli.vigil("follow", sid)
    assert text.returncode == 0, explain(text)
    approved = text.stdout.find("— approved a1-0 (http_fetch) by ana: go")
    result = text.stdout.find(" tool:http_fetch")
    assert 0 <= approved < result, text.stdout

    # follow --json, read after the end.
    again = cli.vigil("follow", sid, "--json")
    assert again.returncode == 0, explain(again)
    order = [_said(json.loads(ln)) for ln in again.stdout.splitlines()]
    assert order.index("approval_decided") < order.index("message:tool"), order

    # export (JSON Lines and Markdown).
    exported = cli.vigil("export", sid)
    assert exported.returncode == 0, explain(exported)
    order = [_said(json.loads(ln)) for ln in exported.stdout.splitlines()]
    assert order.index("approval_decided") < order.index("message:tool"), order
    # The end comes after the last messages, which are written with it.
    last_message = max(n for n, said in enumerate(order) if said.startswith("message:"))
    assert order.index("session_ended") > last_message, order
    markdown = cli.vigil("export", sid, "--format", "md")
    assert markdown.returncode == 0, explain(markdown)
    decided = markdown.stdout.find("**approval decided** by **ana**")
    assert 0 <= decided < markdown.stdout.find("tool result `http_fetch`"), markdown.stdout
    assert markdown.stdout.rfind("### ") < markdown.stdout.find("**session ended**"), (
        markdown.stdout
    )

    # The view: each action at its own time, so ORDER BY at is the order they were done.
    rows = query(
        cli.database_url,
        "SELECT kind, reason, details, at FROM human_actions_view WHERE session_id = :s "
        "AND kind IN ('human_message', 'approval_decided') ORDER BY at",
        s=sid,
    )
    assert [r["kind"] for r in rows] == ["human_message", "human_message", "approval_decided"]
    stamps = [r["at"] for r in rows]
    assert stamps[0] < stamps[1] < stamps[2], stamps
    for r in rows:
        own = r["details"] if isinstance(r["details"], dict) else json.loads(r["details"])
        assert r["at"] == datetime.fromisoformat(own["at"]), (r, own)
    [call] = query(
        cli.database_url, "SELECT decided_at FROM tool_calls_view WHERE session_id = :s", s=sid
    )
    assert call["decided_at"] == rows[2]["at"], (call, rows[2])

    # The record's own order: the decision, then the tool's result (its event and its
    # message). The messages people sent meanwhile are the next step's input, written
    # with it.
    events = [
        r["key"]
        for r in query(
            cli.database_url,
            "SELECT key FROM events WHERE session_id = :s ORDER BY id",
            s=sid,
        )
    ]
    assert events.index("approval:a1-0:decided") < events.index("tool:1:0"), events
    said = query(
        cli.database_url,
        "SELECT role, seq, created_at FROM messages WHERE session_id = :s ORDER BY seq",
        s=sid,
    )
    [decided_at] = [
        r["created_at"]
        for r in query(
            cli.database_url,
            "SELECT created_at FROM events WHERE session_id = :s AND key = :k",
            s=sid,
            k="approval:a1-0:decided",
        )
    ]
    tool = [r for r in said if r["role"] == "tool"]
    assert tool and decided_at <= tool[0]["created_at"], said
