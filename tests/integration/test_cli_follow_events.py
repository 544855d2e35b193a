"""`vigil follow` shows every event a person cares about, interleaved in the order it
happened with the messages, in text and JSON, with who did it; a cancel names who
cancelled and why in the record, `export`, `show` and the human_actions_view."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

from tests.integration.conftest import CLIStack
from tests.support.cli import (
    CLI,
    LineReader,
    explain,
    poll,
    query,
    read_record,
    wait_approval,
    wait_recorded,
)
from tests.support.llm_stub import Reply
from tests.support.sessions import forgotten_by_temporal
from vigil.schema import names
from vigil.schema.payloads import MAX_HUMAN_TEXT, MessageInput
from vigil.workers.client import VigilClient
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration


def _send_oversized_message(cli: CLIStack, sid: str) -> None:
    """A signal the workflow refuses (as a plain `temporal workflow signal` could send)."""

    async def go() -> None:
        client = await VigilClient.connect(cli.settings)
        try:
            refused = MessageInput(text="r" * (MAX_HUMAN_TEXT + 1), by="mallory")
            await client.temporal.get_workflow_handle(sid).signal(names.SIG_MESSAGE, refused)
        finally:
            await client.close()

    asyncio.run(go())


def _status(cli: CLIStack, sid: str) -> str:
    state = cli.vigil.json("show", sid, "--json")["state"]
    return str(state["status"]) if state else ""


@pytest.mark.timeout(600)
def test_follow_shows_human_and_session_events_in_order(cli: CLIStack) -> None:
    url = cli.stub.url
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{url}/first"}),
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "check again later"}),
        Reply.tool_call("http_fetch", {"url": f"{url}/second"}),
    )
    agent = f"follow-{uuid.uuid4().hex[:8]}"
    started = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")
    sid = started["id"]

    with LineReader(cli.vigil.popen("follow", sid, "--json")) as follow:
        wait_approval(cli.database_url, sid, "a1-0")
        cli.vigil.ok("pause", sid, "--by", "bob", "--reason", "lunch")
        cli.vigil.ok("resume", sid, "--by", "bob")
        cli.vigil.ok("say", sid, "hello there", "--by", "carol")
        _send_oversized_message(cli, sid)
        cli.vigil.ok("redirect", sid, "fetch both pages, then stop", "--by", "fay")
        cli.vigil.ok("approve", sid, "a1-0", "--by", "ana", "--note", "looks fine")
        poll(lambda: _status(cli, sid) == "sleeping", 60, "the session sleeps")
        cli.vigil.ok("wake", sid, "--by", "dan", "--reason", "now")
        wait_approval(cli.database_url, sid, "a3-0")
        cancel = cli.vigil("cancel", sid, "--by", "erin", "--reason", "enough")
        assert cancel.returncode == 0, explain(cancel)
        code, lines, stderr = follow.finish(90)
    assert code == 0, stderr
    *items, end = [json.loads(ln) for ln in lines]
    assert end["status"] == "cancelled" and end["summary"] == "cancelled by erin: enough"

    def said(item: dict[str, Any]) -> tuple[Any, ...]:
        if item["type"] == "approval":
            return ("approval", item["approval_id"])
        if item["type"] == "event":
            return (item["kind"], item["actor"], item["reason"])
        return ("message", item["role"], item["name"])

    events = [said(i) for i in items if i["type"] != "message"]
    assert events == [
        ("approval", "a1-0"),
        ("session_paused", "bob", "lunch"),
        ("session_resumed", "bob", None),
        ("input_rejected", None, events[3][2]),
        ("session_redirected", "fay", None),
        ("approval_decided", "ana", "looks fine"),
        ("session_woken", "dan", "now"),
        ("approval", "a3-0"),
        ("session_ended", "erin", "enough"),
    ], events
    assert "too long" in str(events[3][2]) or "limit" in str(events[3][2]), events[3]
    order = [said(i) for i in items]
    # Each approval request comes after the message that asked for it; carol's message
    # is shown once, as the message (with who sent it).
    first_call = order.index(("message", "assistant", None))
    assert first_call < order.index(("approval", "a1-0"))
    assert ("message", "user", "carol") in order
    assert not [i for i in items if i["type"] == "event" and i["kind"] == "human_message"]
    approvals = [i for i in items if i["type"] == "approval"]
    assert approvals[0]["pending"] and approvals[0]["approve"].endswith(f"{sid} a1-0")

    # The same story as text, read after the end (from the record).
    text = cli.vigil("follow", sid)
    assert text.returncode == 0, explain(text)
    wanted = [
        "approval asked a1-0: http_fetch(",
        "— paused by bob: lunch",
        "— resumed by bob",
        "— input refused (message): ",
        "— goal changed by fay: fetch both pages, then stop",
        "— approved a1-0 (http_fetch) by ana: looks fine",
        "— woken by dan: now",
        "approval asked a3-0: http_fetch(",
        "— cancelled by erin: enough",
        f"session {sid} ended: cancelled",
    ]
    at = [text.stdout.find(w) for w in wanted]
    assert all(i >= 0 for i in at) and at == sorted(at), (at, text.stdout)
    assert "user:carol" in text.stdout

    # Who cancelled, and why: the record, show, export and the view.
    row = wait_recorded(cli.database_url, sid, "cancelled")
    assert row.summary == "cancelled by erin: enough"
    _, _, recorded = read_record(cli.database_url, sid)
    [ended] = [e for e in recorded if e.kind == "session_ended"]
    assert (ended.actor, ended.reason) == ("erin", "enough")
    shown = cli.vigil.json("show", sid, "--json")
    assert shown["session"]["summary"] == "cancelled by erin: enough"
    exported = cli.vigil("export", sid)
    assert exported.returncode == 0, explain(exported)
    lines_out = [json.loads(ln) for ln in exported.stdout.splitlines()]
    assert any(
        ln.get("kind") == "session_ended" and ln["actor"] == "erin" and ln["reason"] == "enough"
        for ln in lines_out
    ), lines_out[-3:]
    view = query(
        cli.database_url,
        "SELECT kind, actor, reason FROM human_actions_view WHERE session_id = :s "
        "AND kind = 'session_ended'",
        s=sid,
    )
    assert view == [{"kind": "session_ended", "actor": "erin", "reason": "enough"}]


def test_follow_says_erased_when_temporal_forgot_the_session_first(cli: CLIStack) -> None:
    """An erasure asks Temporal to delete the session's runs before it removes the record.
    When Temporal had deleted them by the time the follower saw the record gone, `vigil
    follow` said only "no session with id X": it now says the session was erased."""
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    agent = f"follow-forgot-{uuid.uuid4().hex[:8]}"
    sid = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")["id"]
    with LineReader(cli.vigil.popen("follow", sid)) as follow:
        wait_approval(cli.database_url, sid, "a1-0")
        asyncio.run(_deleted_from_temporal(cli, sid))
        cli.vigil.ok("erase", "--session", sid, "--yes")
        code, _, stderr = follow.finish(60)
    assert code == 4, stderr
    assert f"no session with id {sid!r}: it was erased" in stderr, stderr


async def _deleted_from_temporal(cli: CLIStack, session_id: str) -> None:
    """The session's run terminated and deleted, and Temporal no longer knows it."""
    client = await connect(cli.settings)
    handle = client.get_workflow_handle(session_id)
    await handle.terminate(reason="erased by vigil")
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=session_id)
        )
    )
    await forgotten_by_temporal(client, session_id)


def test_follow_ends_when_the_session_is_erased(cli: CLIStack) -> None:
    """`vigil follow` of a waiting session erased meanwhile printed nothing more, for
    ever."""
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    agent = f"follow-erased-{uuid.uuid4().hex[:8]}"
    sid = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")["id"]
    with LineReader(cli.vigil.popen("follow", sid)) as follow:
        wait_approval(cli.database_url, sid, "a1-0")
        cli.vigil.ok("erase", "--session", sid, "--yes")
        code, _, stderr = follow.finish(60)
    assert code == 4, stderr
    assert f"no session with id {sid!r}: it was erased" in stderr, stderr


def test_follow_says_why_a_session_does_not_move(cli: CLIStack, tmp_path: Path) -> None:
    """A session whose model calls kept failing (here: a connection no worker has) was
    followed in silence: only `vigil show` said the call was being retried, and why."""
    agent = f"stuck-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / f"{agent}.toml"
    spec.write_text(f'name = "{agent}"\n\n[model]\nconnection = "nowhere"\n')
    cli.vigil.ok("agent", "apply", str(spec))
    started = cli.vigil.json("start", "go on", "--agent", agent)
    follow = subprocess.Popen(
        [*CLI, "follow", started["id"]],
        env=cli.vigil.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # read as one stream: the note goes to stderr
        text=True,
    )
    try:
        with LineReader(follow) as reader:
            poll(
                lambda: any("retrying" in line for line in reader.snapshot()),
                60,
                "a line on why the session does not move",
            )
            told = next(line for line in reader.snapshot() if "retrying" in line)
    finally:
        cli.vigil.ok("cancel", started["id"])
    assert "vigil.call_model attempt" in told and "'nowhere'" in told, told
    assert f"show {started['id']}" in told, told
