"""Oversized input is refused by vigil's own faces before it is sent (issue 9, defect 3).

Temporal writes a signal into history before the workflow can refuse it, so the CLI and
the client check the workflow's own limits (schema/limits.py) first: exit 2 and one
clear line, nothing in the session's history or record.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, read_record, wait_approval
from tests.support.llm_stub import Reply
from tests.support.sessions import until
from vigil.schema.limits import MAX_ACTOR, MAX_SYSTEM_PROMPT
from vigil.schema.payloads import MAX_HUMAN_TEXT, ToolPolicy
from vigil.workers.client import BadArgument, UnknownSession, VigilClient

pytestmark = pytest.mark.integration

BIG = "b" * (MAX_HUMAN_TEXT + 1)


@pytest.fixture
async def client(cli: CLIStack) -> AsyncIterator[VigilClient]:
    vigil = await VigilClient.connect(cli.settings)
    try:
        yield vigil
    finally:
        await vigil.close()


def _waiting_session(cli: CLIStack) -> str:
    goal = cli.plan(Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}))
    started = cli.vigil.json("start", goal, "--agent", "big", "--approve-tools", "write_artifact")
    sid: str = started["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    return sid


def _signals_in_history(cli: CLIStack, sid: str) -> list[str]:
    lines = cli.vigil.json("history", sid)
    return [ln["detail"] for ln in lines if ln["kind"] == "workflow_execution_signaled"]


def test_the_cli_refuses_oversized_controls_before_sending(cli: CLIStack) -> None:
    sid = _waiting_session(cli)
    calls = {
        ("say", sid, BIG): "text of 32769 characters exceeds the limit of 32768",
        ("say", sid, BIG, "--signal"): "text of 32769 characters exceeds",
        ("approve", sid, "a1-0", "--note", BIG): "`note` of 32769 characters exceeds",
        ("wake", sid, "--by", "w" * (MAX_ACTOR + 1)): f"`by` of {MAX_ACTOR + 1} characters",
        ("start", "a goal", "--system-prompt", "p" * (MAX_SYSTEM_PROMPT + 1)): (
            f"system prompt of {MAX_SYSTEM_PROMPT + 1} characters exceeds the limit"
        ),
    }
    answers = cli.vigil.many(*calls, timeout=240)
    for (args, expected), done in zip(calls.items(), answers, strict=True):
        assert done.returncode == 2, explain(done)[:2000]
        line = one_error_line(done)
        assert expected in line, (args[:3], line[:300])
    # Nothing reached the session: no signal in its history, no refusal in its record.
    assert _signals_in_history(cli, sid) == []
    _row, _messages, events = read_record(cli.database_url, sid)
    assert [e for e in events if e.kind == "input_rejected"] == []
    # Refused before connecting: the same answer with no server to talk to.
    dead = cli.vigil("say", sid, BIG, env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert dead.returncode == 2, explain(dead)[:2000]
    assert one_error_line(dead).startswith("error: refused before sending: text of 32769")
    cli.vigil.ok("cancel", sid)


async def test_the_client_refuses_oversized_controls_before_sending(
    cli: CLIStack, client: VigilClient
) -> None:
    goal = cli.plan(Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}))
    policy = ToolPolicy(require_approval=["write_artifact"])
    sid = (await client.start_session("big", goal, policy=policy)).id
    await until(lambda: _pending(client, sid), what="approval a1-0")
    edited = {"content": "e" * MAX_HUMAN_TEXT}
    for wait in (True, False):
        refused = {
            "refused before sending: text of 1900000 characters exceeds": client.say(
                sid, "x" * 1_900_000, by="mallory", wait=wait
            ),
            "text is empty": client.say(sid, "  ", by="mallory", wait=wait),
            "text of 32769 characters": client.redirect(sid, BIG, by="mallory", wait=wait),
            "`note` of 32769 characters": client.approve(
                sid, "a1-0", by="alice", note=BIG, wait=wait
            ),
            "edited_arguments of 32783 bytes exceed": client.approve(
                sid, "a1-0", by="alice", edited_arguments=edited, wait=wait
            ),
            "`reason` of 32769 characters": client.reject(
                sid, "a1-0", by="alice", reason=BIG, wait=wait
            ),
            "`reason` of 32769": client.pause(sid, by="alice", reason=BIG, wait=wait),
            f"`by` of {MAX_ACTOR + 1} characters": client.resume(
                sid, by="w" * (MAX_ACTOR + 1), wait=wait
            ),
        }
        for expected, call in refused.items():
            with pytest.raises(BadArgument, match=re.escape(expected)):
                await call
    with pytest.raises(BadArgument, match="system prompt of"):
        await client.start_session("big", "a goal", system_prompt="p" * (MAX_SYSTEM_PROMPT + 1))
    with pytest.raises(BadArgument, match="goal of 32769 characters exceeds"):
        await client.start_session("big", BIG)
    history = await client.history(sid)
    assert [ln for ln in history if ln.kind == "workflow_execution_signaled"] == []
    await client.cancel(sid)


async def _pending(client: VigilClient, sid: str) -> bool:
    try:
        current = await client.state(sid)
    except UnknownSession:  # started, not picked up yet
        return False
    return [a.approval_id for a in current.pending_approvals] == ["a1-0"]
