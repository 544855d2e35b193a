"""Text recorded from untrusted sources (a goal, a message, a pause reason, a tool's
output, a model's reply, a memory, a schedule's goal) never reaches the operator's terminal
as escape sequences: every command shows control characters and bidi overrides as visible,
harmless characters, in a pipe and on a colour terminal (where vigil's own colours stay),
and ``--json`` keeps the exact text."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from typing import Any

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, wait_approval, wait_recorded
from tests.support.llm_stub import Reply
from vigil.workers.client import VigilClient

pytestmark = pytest.mark.integration

# What an attacker puts in a goal: a window title (OSC), a colour, a C1 CSI, bidi
# overrides, DEL and a carriage return.
HOSTILE = (
    "esc \x1b]0;PWNED\x07 title \x1b[31mred c1\x9b2J bidi\u202eevil\u2066x\u2069 del\x7f cr\rX"
)
SHOWN = "esc ␛]0;PWNED␇ title ␛[31mred"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def harmful(text: str) -> list[str]:
    """The characters a terminal could act on (newline and tab aside)."""
    return [
        ch
        for ch in text
        if ch not in "\n\t"
        and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in BIDI or 0xD800 <= ord(ch) <= 0xDFFF)
    ]


def harmless(done: subprocess.CompletedProcess[str]) -> str:
    """The command's output, insisting it succeeded and holds nothing a terminal acts on."""
    assert done.returncode == 0, explain(done)
    for stream in (done.stdout, done.stderr):
        assert harmful(stream) == [], f"{harmful(stream)} in {stream!r}"
    return done.stdout


def without_styles(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def send(cli: CLIStack, sid: str, text: str) -> None:
    """A message as the HTTP API or a script sends it (any text, NUL too)."""

    async def go() -> None:
        client = await VigilClient.connect(cli.settings)
        try:
            await client.say(sid, text, by="mallory\x1b[2J")
        finally:
            await client.close()

    asyncio.run(go())


@pytest.fixture(scope="module")
def ended(cli: CLIStack) -> dict[str, Any]:
    """A session whose goal, approval, pause reason, message, tool output and summary all
    carry control characters; ended (completed)."""
    url = cli.stub.url
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{url}/x?q={HOSTILE}"}),
        Reply.tool_call("finish", {"summary": f"done {HOSTILE}"}),
    )
    goal = f"{goal} {HOSTILE}"
    agent = f"ctl-{uuid.uuid4().hex[:8]}"
    sid: str = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")[
        "id"
    ]
    wait_approval(cli.database_url, sid, "a1-0")
    waiting = {
        "show": cli.vigil("show", sid),
        "show_colour": cli.vigil("show", sid, env={"FORCE_COLOR": "1", "TERM": "xterm"}),
    }
    cli.vigil.ok("pause", sid, "--by", "ana", "--reason", "r\x1b[2Jclear")
    cli.vigil.ok("resume", sid, "--by", "ana")
    send(cli, sid, f"nul\x00 {HOSTILE}")
    cli.vigil.ok("approve", sid, "a1-0", "--by", "ana")
    wait_recorded(cli.database_url, sid, "completed", within=60)
    return {"sid": sid, "agent": agent, "goal": goal, "waiting": waiting}


def test_show_while_an_approval_waits_shows_controls_visibly(
    cli: CLIStack, ended: dict[str, Any]
) -> None:
    shown = harmless(ended["waiting"]["show"])
    assert SHOWN in shown
    assert "bidi\ufffdevil" in shown
    assert "approval" in shown and "a1-0" in shown
    # On a colour terminal: vigil's own styles are escape sequences, the data is not.
    coloured = ended["waiting"]["show_colour"]
    assert coloured.returncode == 0, explain(coloured)
    assert "\x1b[" in coloured.stdout  # the CLI's own colours still work
    assert "\x1b]0;PWNED" not in coloured.stdout and "\x1b[31mred" not in coloured.stdout
    assert harmful(without_styles(coloured.stdout)) == []
    assert SHOWN in without_styles(coloured.stdout)


def test_show_list_follow_history_and_search_show_controls_visibly(
    cli: CLIStack, ended: dict[str, Any]
) -> None:
    sid, agent = ended["sid"], ended["agent"]
    show, listed, follow, history, search = cli.vigil.many(
        ("show", sid),
        ("list", "--agent", agent),
        ("follow", sid),
        ("history", sid),
        ("search", "PWNED", "--agent", agent),
    )
    shown = harmless(show)
    assert SHOWN in shown  # the goal, the message, the summary
    assert "nul␀" in shown  # a message's NUL
    assert SHOWN in harmless(listed)
    followed = harmless(follow)
    assert "paused by ana: r␛[2Jclear" in followed
    assert "nul␀" in followed and SHOWN in followed
    harmless(history)
    assert "PWNED" in harmless(search)


def test_json_output_holds_the_exact_text(cli: CLIStack, ended: dict[str, Any]) -> None:
    sid, agent = ended["sid"], ended["agent"]
    show, listed, follow = cli.vigil.many(
        ("show", sid, "--json"), ("list", "--agent", agent, "--json"), ("follow", sid, "--json")
    )
    view = json.loads(harmless(show))
    assert view["session"]["goal"] == ended["goal"]
    assert view["session"]["summary"] == f"done {HOSTILE}"
    assert f"nul\x00 {HOSTILE}" in [m["content"] for m in view["messages"]]
    [row] = json.loads(harmless(listed))
    assert row["goal"] == ended["goal"]
    lines = [json.loads(ln) for ln in harmless(follow).splitlines()]
    reasons = [ln.get("reason") for ln in lines if ln["type"] == "event"]
    assert "r\x1b[2Jclear" in reasons
    assert f"nul\x00 {HOSTILE}" in [ln.get("content") for ln in lines]


def test_the_markdown_export_shows_them_as_before(cli: CLIStack, ended: dict[str, Any]) -> None:
    markdown = cli.vigil.ok("export", ended["sid"], "-f", "md").stdout
    assert SHOWN in markdown and "nul␀" in markdown


def test_memories_and_schedules_show_controls_visibly(cli: CLIStack) -> None:
    agent = f"ctl-{uuid.uuid4().hex[:8]}"
    cli.vigil.ok("memory", "add", f"remember {HOSTILE}", "--agent", agent, "--subject", HOSTILE)
    found = harmless(cli.vigil("memory", "search", "remember PWNED", "--agent", agent))
    assert "remember esc ␛]0;PWNED␇" in found
    [memory] = json.loads(
        harmless(cli.vigil("memory", "search", "remember", "--agent", agent, "--json"))
    )
    assert memory["content"] == f"remember {HOSTILE}"

    schedule_id = f"ctl-{uuid.uuid4().hex[:8]}"
    cli.vigil.ok(
        "schedule", "create", schedule_id, "--goal", HOSTILE, "--agent", agent, "--every", "1h"
    )
    try:
        listed = harmless(cli.vigil("schedule", "list"))
        assert "esc ␛]0;PWNED␇" in listed
        schedules = json.loads(harmless(cli.vigil("schedule", "list", "--json")))
        assert HOSTILE in [s["goal"] for s in schedules]
    finally:
        cli.vigil.ok("schedule", "delete", schedule_id)


def test_an_error_quoting_text_shows_controls_visibly(cli: CLIStack) -> None:
    done = cli.vigil("show", "no-such-\x1b]0;PWNED\x07")
    assert done.returncode != 0
    assert harmful(done.stderr) == [], repr(done.stderr)
    assert "error:" in done.stderr
