"""What a session leaves behind, read back through the `vigil` CLI: `export` (JSONL and
Markdown, checked against PostgreSQL), `artifact list` / `artifact get` (the bytes the
model wrote, checksum verified), full-text `search` across an agent's sessions, and
`memory add` / `memory search`."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, read_record
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration

DRAFT = "# Zebra census (draft)\n"
REPORT = "# Zebra census\n\nCounted 42 zebras — ünïcode ✓, [bold] and [/x] stay text.\n"


@pytest.fixture(scope="module")
def sessions(cli: CLIStack) -> dict[str, str]:
    """Three finished sessions: two of one agent (one wrote an artifact), one of another."""
    agent, other = f"rec-{uuid.uuid4().hex[:8]}", f"rec-other-{uuid.uuid4().hex[:8]}"
    report = cli.plan(
        Reply.tool_calls(  # a draft first: report.md has two versions
            ("write_artifact", {"name": "report.md", "content": DRAFT}),
            (
                "write_artifact",
                {"name": "report.md", "content": REPORT, "mime_type": "text/markdown"},
            ),
        ),
        Reply.tool_call("finish", {"summary": "the zebra census is in report.md"}),
        label="count the zebras",
    )
    crossing = cli.plan(Reply.text("zebra crossings are striped"), label="look at roads")
    elsewhere = cli.plan(Reply.text("a zebra of another agent"), label="elsewhere")
    runs = cli.vigil.many(
        ("start", report, "--agent", agent, "--wait", "--json"),
        ("start", crossing, "--agent", agent, "--wait", "--json"),
        ("start", elsewhere, "--agent", other, "--wait", "--json"),
    )
    ends = []
    for done in runs:
        assert done.returncode == 0, explain(done)
        ends.append(json.loads(done.stdout))
    assert [e["status"] for e in ends] == ["completed"] * 3
    return {
        "agent": agent,
        "other": other,
        "report": ends[0]["id"],
        "crossing": ends[1]["id"],
        "elsewhere": ends[2]["id"],
    }


def test_a_media_type_that_is_not_one_is_refused_to_the_model(cli: CLIStack) -> None:
    # Kept as given, it was listed back with its line break (and split `artifact list`).
    agent = f"rec-mime-{uuid.uuid4().hex[:8]}"
    plan = cli.plan(
        Reply.tool_call(
            "write_artifact", {"name": "deep.txt", "content": "c", "mime_type": "text/html\r\nX: 1"}
        ),
        Reply.tool_call("finish", {"summary": "tried"}),
        label="a bad media type",
    )
    ended = cli.vigil.json("start", plan, "--agent", agent, "--wait")
    assert ended["status"] == "completed", ended
    assert cli.vigil.json("artifact", "list", ended["id"]) == []
    _, transcript, _ = read_record(cli.database_url, ended["id"])
    answer = next(m for m in transcript if m.role == "tool")
    assert "'text/html\\r\\nX: 1' is not a media type" in answer.content, answer.content


def test_export_jsonl_and_markdown_match_the_record(
    cli: CLIStack, sessions: dict[str, str], tmp_path: Path
) -> None:
    sid = sessions["report"]
    md_file = tmp_path / "session.md"
    jsonl, md = cli.vigil.many(
        ("export", sid, "-f", "jsonl"), ("export", sid, "-f", "md", "-o", str(md_file))
    )
    assert jsonl.returncode == 0, explain(jsonl)
    assert md.returncode == 0 and md.stdout == "", explain(md)
    row, transcript, _ = read_record(cli.database_url, sid)

    header, *items = [json.loads(line) for line in jsonl.stdout.splitlines()]
    lines = [m for m in items if m["type"] == "message"]
    # The events (here the tool call that ran) come with the messages, in time order.
    events = [e for e in items if e["type"] == "event"]
    assert "tool_call" in {e["kind"] for e in events}, events
    times = [i["created_at"] for i in items]
    assert times == sorted(times)
    assert header["type"] == "session"
    assert header["session"]["id"] == sid and header["session"]["status"] == "completed"
    assert header["session"]["summary"] == row.summary == "the zebra census is in report.md"
    assert [
        (m["seq"], m["role"], m["name"], m["content"], m["tool_calls"], m["tool_call_id"])
        for m in lines
    ] == [(m.seq, m.role, m.name, m.content, m.tool_calls, m.tool_call_id) for m in transcript]
    call = lines[1]["tool_calls"][1]
    assert call["name"] == "write_artifact" and json.loads(call["arguments"])["content"] == REPORT

    text = md_file.read_text(encoding="utf-8")
    assert text.startswith(f"# Session `{sid}`\n")
    assert "- **Status:** completed (step 2)" in text
    # The cost as `vigil show` gives it (it read `cost $0.0` here, `$0.0000` there).
    shown = cli.vigil.ok("show", sid).stdout
    cost = re.search(r"\$\d+\.\d{4}", shown)
    assert cost is not None and f"cost {cost.group(0)}" in text, (shown, text[:400])
    assert "**Tool call** `write_artifact`" in text
    assert "Counted 42 zebras — ünïcode ✓, [bold] and [/x] stay text." in text  # the arguments
    for m in transcript:
        assert f"### {m.seq} · " in text
        assert m.content in text
    assert text.index("### 0 · user") < text.index("### 1 · assistant") < text.index("### 4 · ")


def test_transcript_pages_as_the_api_does(cli: CLIStack, sessions: dict[str, str]) -> None:
    """A page of a session's messages had no command (`show` gives the last few, `export`
    all of it); the API's transcript page had no CLI face."""
    sid = sessions["report"]
    _row, transcript, _ = read_record(cli.database_url, sid)
    first = cli.vigil.json("transcript", sid, "--limit", "2")
    assert [m["seq"] for m in first["items"]] == [m.seq for m in transcript[:2]]
    assert first["next_after_seq"] == transcript[1].seq
    rest = cli.vigil.json("transcript", sid, "--after-seq", str(first["next_after_seq"]))
    assert [m["seq"] for m in rest["items"]] == [m.seq for m in transcript[2:]]
    assert rest["next_after_seq"] is None and rest["archived"] is None
    shown = cli.vigil("transcript", sid, "--limit", "2")
    assert shown.returncode == 0, explain(shown)
    assert f"#{transcript[0].seq} user" in shown.stdout
    assert f"transcript {sid} --after-seq {transcript[1].seq}" in shown.stderr
    past = cli.vigil.ok("transcript", sid, "--after-seq", "99999").stdout
    assert past.strip() == "no messages after #99999 (the transcript ends before it)", past
    unknown = cli.vigil("transcript", f"nope-{uuid.uuid4().hex[:6]}")
    assert unknown.returncode == 4, explain(unknown)


def test_artifact_list_and_get(cli: CLIStack, sessions: dict[str, str], tmp_path: Path) -> None:
    sid = sessions["report"]
    dest = tmp_path / "downloaded.md"
    listed, got, missing = cli.vigil.many(
        ("artifact", "list", sid, "--json"),
        ("artifact", "get", sid, "report.md", "-o", str(dest), "--json"),
        ("artifact", "get", sid, "nope.md", "-o", str(tmp_path / "nope")),
    )
    body = REPORT.encode()
    digest = hashlib.sha256(body).hexdigest()
    assert listed.returncode == 0, explain(listed)
    [ref] = json.loads(listed.stdout)
    assert (ref["name"], ref["size"], ref["sha256"]) == ("report.md", len(body), digest)
    assert ref["mime_type"].startswith("text/markdown")
    assert got.returncode == 0, explain(got)
    assert json.loads(got.stdout) == {
        "name": "report.md",
        "version": None,
        "sha256": digest,
        "size": len(body),
        "path": str(dest),
    }
    assert dest.read_bytes() == body
    # An earlier version by its number (only the API could read one).
    first, newest, past = cli.vigil.many(
        ("artifact", "get", sid, "report.md", "--version", "1", "-o", "-"),
        ("artifact", "get", sid, "report.md", "--version", "2", "-o", "-"),
        ("artifact", "get", sid, "report.md", "--version", "3", "-o", "-"),
    )
    assert (first.returncode, first.stdout) == (0, DRAFT), explain(first)
    assert (newest.returncode, newest.stdout) == (0, REPORT), explain(newest)
    assert past.returncode == 4 and "version 3" in one_error_line(past), explain(past)
    assert missing.returncode == 4, explain(missing)
    assert one_error_line(missing) == f"error: session {sid} has no artifact 'nope.md'"
    assert not (tmp_path / "nope").exists() and not (tmp_path / "nope.part").exists()

    # `-o -` writes the bytes to stdout; an existing file is kept unless --force.
    to_stdout, kept = cli.vigil.many(
        ("artifact", "get", sid, "report.md", "-o", "-"),
        ("artifact", "get", sid, "report.md", "-o", str(dest)),
    )
    assert to_stdout.returncode == 0 and to_stdout.stdout == REPORT, explain(to_stdout)
    assert not (cli.vigil.cwd / "-").exists()
    assert kept.returncode == 2, explain(kept)
    assert (
        one_error_line(kept) == f"error: {dest} exists; --force overwrites it (or -o another path)"
    )
    dest.write_text("changed")
    cli.vigil.ok("artifact", "get", sid, "report.md", "-o", str(dest), "--force")
    assert dest.read_bytes() == body

    # A link whose target is gone was replaced without --force; a folder that does not
    # exist ended in exit 1 naming the download's `.part` file.
    link = tmp_path / "link.md"
    link.symlink_to(tmp_path / "gone" / "target.md")
    no_folder = tmp_path / "no" / "such" / "report.md"
    linked, nowhere = cli.vigil.many(
        ("artifact", "get", sid, "report.md", "-o", str(link)),
        ("artifact", "get", sid, "report.md", "-o", str(no_folder)),
    )
    assert linked.returncode == 2 and link.is_symlink(), explain(linked)
    assert one_error_line(linked) == (
        f"error: {link} exists; --force overwrites it (or -o another path)"
    )
    assert nowhere.returncode == 2, explain(nowhere)
    assert one_error_line(nowhere) == f"error: {no_folder.parent} is not a folder"
    assert ".part" not in nowhere.stderr


def test_search_across_an_agents_sessions(cli: CLIStack, sessions: dict[str, str]) -> None:
    found, human, other = cli.vigil.many(
        ("search", "zebra", "--agent", sessions["agent"], "--json"),
        ("search", "zebra", "--agent", sessions["agent"]),
        ("search", "zebra", "--agent", sessions["other"], "--json"),
    )
    for done in (found, human, other):
        assert done.returncode == 0, explain(done)
    hits = json.loads(found.stdout)
    assert {h["session_id"] for h in hits} == {sessions["report"], sessions["crossing"]}
    assert all("[[zebra" in h["snippet"].lower() for h in hits), hits
    crossing = next(h for h in hits if h["session_id"] == sessions["crossing"])
    assert crossing["role"] == "assistant" and "crossings are striped" in crossing["snippet"]
    # The readable table shows the matches (in bold on a terminal), not raw markers, and
    # brackets in the text stay text (not swallowed as markup).
    assert "[[" not in human.stdout and "zebra" in human.stdout.lower()
    assert {h["session_id"] for h in json.loads(other.stdout)} == {sessions["elsewhere"]}


def test_memory_add_and_search(cli: CLIStack) -> None:
    agent = f"mem-{uuid.uuid4().hex[:8]}"
    first = cli.vigil.json(
        "memory",
        "add",
        "The deploy key rotates every Friday",
        "--agent",
        agent,
        "--subject",
        "deploy key",
        "--importance",
        "0.9",
    )
    assert first["action"] == "inserted"
    again = cli.vigil.json(
        "memory",
        "add",
        "The deploy key rotates every Friday",
        "--agent",
        agent,
        "--subject",
        "deploy key",
    )
    assert again["action"] == "merged" and again["id"] == first["id"]
    newer = cli.vigil.json(
        "memory",
        "add",
        "The deploy key now rotates every Monday",
        "--agent",
        agent,
        "--subject",
        "deploy key",
    )
    assert newer["action"] == "superseded" and newer["superseded_ids"] == [first["id"]]

    live, everything, stranger = cli.vigil.many(
        ("memory", "search", "when does the deploy key rotate", "--agent", agent, "--json"),
        (
            "memory",
            "search",
            "when does the deploy key rotate",
            "--agent",
            agent,
            "--all",
            "--json",
        ),
        ("memory", "search", "deploy key", "--agent", f"{agent}-x", "--json"),
    )
    for done in (live, everything, stranger):
        assert done.returncode == 0, explain(done)
    assert [(m["id"], m["content"]) for m in json.loads(live.stdout)] == [
        (newer["id"], "The deploy key now rotates every Monday")
    ]
    both = {m["id"]: m["superseded"] for m in json.loads(everything.stdout)}
    assert both == {newer["id"]: False, first["id"]: True}
    assert json.loads(stranger.stdout) == []  # another agent sees none of it


def test_memory_add_reads_dash_from_stdin_and_names_the_agent(cli: CLIStack) -> None:
    """`-` was stored as the memory's text (`say` and `secret set` read standard input
    for it), and the answer did not say whose memory it went to (`default` without
    --agent)."""
    agent = f"mem-stdin-{uuid.uuid4().hex[:8]}"
    added = cli.vigil("memory", "add", "-", "--agent", agent, input="piped in\n")
    assert added.returncode == 0, explain(added)
    assert f"for agent '{agent}'" in added.stdout, added.stdout
    found = cli.vigil.json("memory", "search", "piped", "--agent", agent)
    assert [m["content"] for m in found] == ["piped in"]
