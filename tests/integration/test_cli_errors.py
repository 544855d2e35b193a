"""The `vigil` CLI's failures a user can fix: one line starting with `error:`, no
traceback, and the documented exit code (2 bad argument or refused control, 3 server
unreachable, 4 unknown session or schedule)."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, wait_approval, wait_recorded
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration


def test_unknown_session_or_schedule_exits_4(cli: CLIStack) -> None:
    sid = f"no-such-session-{uuid.uuid4().hex[:6]}"
    calls = [
        ("show", sid),
        ("approve", sid, "a1-0"),
        ("pause", sid),
        ("cancel", sid),
        ("history", sid),
        ("export", sid),
        ("follow", sid),
        ("schedule", "pause", sid),
    ]
    for args, done in zip(calls, cli.vigil.many(*calls), strict=True):
        assert done.returncode == 4, explain(done)
        line = one_error_line(done)
        what = "schedule" if args[0] == "schedule" else "session"
        assert line == f"error: no {what} with id {sid!r}", (args, line)
        assert done.stdout == "", explain(done)


def test_bad_arguments_exit_2(cli: CLIStack) -> None:
    calls = {
        (
            "approve",
            "s-1",
            "a1-0",
            "--edit",
            "not json",
        ): "error: --edit is not valid JSON: Expecting value at character 1",
        ("approve", "s-1", "a1-0", "--edit", '{"to": "bad'): (
            "error: --edit is not valid JSON: Unterminated string starting at character 8"
        ),
        # Deeper than Python's parser goes: the RecursionError's traceback, exit 1.
        ("approve", "s-1", "a1-0", "--edit", "[" * 5000): "error: --edit is nested too deeply",
        ("start", "a goal", "--max-steps", "abc"): "error: Invalid value for '--max-steps':",
        (
            "schedule",
            "create",
            "s-1",
            "--goal",
            "g",
            "--every",
            "2s",
            "--overlap",
            "sometimes",
        ): "error: unknown overlap policy 'sometimes'; one of skip, buffer_one,",
        (
            "schedule",
            "create",
            "s-1",
            "--goal",
            "g",
        ): "error: give exactly one of --cron or --every",
        ("export", "s-1", "-f", "xml"): "error: unknown export format 'xml': jsonl or md",
        ("list", "--since", "yesterday"): "error: bad --since 'yesterday'",
        # Off the calendar once in UTC: a database error's traceback, exit 1.
        ("list", "--since", "0001-01-01T00:00:00+14:00"): (
            "error: since 0001-01-01T00:00:00+14:00 is out of range: from year 1 to 9999"
        ),
        ("list", "--since", "9999-12-31T23:59:59-14:00"): "error: since 9999-12-31T23:59:59",
        ("erasures", "--limit", "99999999999999999999"): "error: Invalid value for '--limit'",
        (
            "schedule",
            "backfill",
            "s-1",
            "--from",
            "nope",
            "--to",
            "2026-01-01",
        ): "error: bad --from 'nope'",
        (
            "schedule",
            "create",
            f"s-{uuid.uuid4().hex[:8]}",
            "--goal",
            "g",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Mars/Olympus",
        ): "unknown time zone 'Mars/Olympus'",
        ("start", "a goal", "--no-such-option"): "error: No such option: --no-such-option",
        # An empty query matched nothing and said so, as if searched.
        ("search", " "): "error: the query is empty",
        ("memory", "search", ""): "error: the query is empty",
    }
    for (args, expected), done in zip(calls.items(), cli.vigil.many(*calls), strict=True):
        assert done.returncode == 2, explain(done)
        line = one_error_line(done)
        assert line.startswith(expected) or expected in line, (args, line)


def test_unreachable_server_exits_3(cli: CLIStack) -> None:
    calls = [("start", "a goal"), ("schedule", "list")]
    dead = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    for done in cli.vigil.many(*calls, env=dead):
        assert done.returncode == 3, explain(done)
        line = one_error_line(done)
        assert line.startswith("error: Temporal at 127.0.0.1:1 is not answering"), line
    no_db = cli.vigil("list", env={"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/nothing"})
    assert no_db.returncode == 3, explain(no_db)
    assert one_error_line(no_db).startswith("error: cannot reach PostgreSQL at 127.0.0.1:1 (")


def test_controls_the_session_refuses_exit_2(cli: CLIStack) -> None:
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}))
    sid = cli.vigil.json("start", goal, "--agent", "errs", "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    unknown, resume, taken = cli.vigil.many(
        ("approve", sid, "a9-9"), ("resume", sid), ("start", "again", "--id", sid)
    )
    assert unknown.returncode == 2, explain(unknown)
    assert one_error_line(unknown) == (
        f"error: refused by session {sid}: unknown approval id 'a9-9' (pending: a1-0)"
    )
    assert resume.returncode == 2, explain(resume)
    assert one_error_line(resume) == f"error: refused by session {sid}: the session is not paused"
    assert taken.returncode == 2, explain(taken)
    assert one_error_line(taken).startswith(f"error: a session with id {sid!r} already exists")

    cli.vigil.ok("cancel", sid)
    wait_recorded(cli.database_url, sid, "cancelled")
    ended = cli.vigil("say", sid, "are you there?")
    assert ended.returncode == 2, explain(ended)
    # Refused by the closing session's validator, or by Temporal once it has closed: the
    # same words either way.
    line = one_error_line(ended)
    assert line == f"error: refused by session {sid}: the session has ended (cancelled)", line
