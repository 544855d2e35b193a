"""What a person meets in the `vigil` CLI: refusals with one line and exit 2, JSON errors
with `--json`, empty results that say why, plain output in a pipe with ids never cut,
`say` from stdin, `cancel` with who and why, `stack env` for the plain `temporal` CLI and
`stack psql` for the README's SQL."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import (
    CLI,
    ROOT,
    explain,
    one_error_line,
    read_record,
    wait_approval,
    wait_recorded,
)
from tests.support.llm_stub import Reply
from tests.support.teststack import TEST_PORTS

pytestmark = pytest.mark.integration


def agent() -> str:
    return f"face-{uuid.uuid4().hex[:8]}"


def test_bad_values_are_refused_with_one_line_and_exit_2(cli: CLIStack) -> None:
    calls = {
        ("memory", "add", "x", "--kind", "opinion"): "error: unknown memory kind 'opinion'",
        ("start", "a goal", "--max-steps", "-1"): "error: Invalid value for '--max-steps'",
        ("start", "a goal", "--allow-tools", "http_fetch,foo"): (
            "error: allowed tools name 'foo', which agent 'default' does not have"
        ),
        ("list", "--status", "bogus"): "error: unknown status 'bogus'; one of ",
        # A comma alone started a session allowed no tool, each call refused.
        ("start", "a goal", "--allow-tools", ","): "error: --allow-tools names no tool",
    }
    for args, done in zip(calls, cli.vigil.many(*calls), strict=True):
        assert done.returncode == 2, explain(done)
        assert one_error_line(done).startswith(calls[args]), explain(done)
        assert done.stdout == "", explain(done)


def test_errors_in_json_mode_are_json_on_stderr(cli: CLIStack) -> None:
    sid = f"no-such-{uuid.uuid4().hex[:6]}"
    missing, bad = cli.vigil.many(("show", sid, "--json"), ("list", "--status", "x", "--json"))
    assert missing.returncode == 4 and missing.stdout == "", explain(missing)
    assert json.loads(missing.stderr) == {
        "error": {"code": "not_found", "message": f"no session with id {sid!r}"}
    }
    assert bad.returncode == 2, explain(bad)
    assert json.loads(bad.stderr)["error"]["code"] == "bad_input"


def test_empty_results_say_so_and_why(cli: CLIStack) -> None:
    who = agent()
    listed, searched, memories = cli.vigil.many(
        ("list", "--agent", who),
        ("search", f"nothing-{who}"),
        ("memory", "search", "anything", "--agent", who),
    )
    for done in (listed, searched, memories):
        assert done.returncode == 0, explain(done)
    assert listed.stdout.strip() == f"no sessions (matching agent {who})"
    assert "no messages match" in searched.stdout
    assert "agent 'default'" in searched.stdout and "--agent" in searched.stdout
    assert f"no memories match 'anything' (searched the memory of agent {who!r})" in (
        memories.stdout
    )


def test_piped_tables_are_plain_and_keep_ids_whole(cli: CLIStack) -> None:
    who = agent()
    words = " ".join(f"word{i}" for i in range(40))
    goal = cli.plan(Reply.tool_call("finish", {"summary": "done"}), label=words)
    sid = cli.vigil.json("start", goal, "--agent", who, "--wait")["id"]
    # A narrow terminal width must not matter to a pipe.
    done = cli.vigil("list", "--agent", who, env={"COLUMNS": "40"})
    assert done.returncode == 0, explain(done)
    assert "\x1b[" not in done.stdout  # no colour codes
    [row] = [ln for ln in done.stdout.splitlines() if sid in ln]  # one line, id whole
    assert who in row and "completed" in row
    # The goal is shortened at a word, never mid-word.
    shown = row.split("│")[-2].strip()
    assert shown.endswith("…")
    assert all(w in words.split() for w in shown.removesuffix("…").split()[1:])


def test_say_reads_stdin_and_cancel_records_who_and_why(cli: CLIStack) -> None:
    talk = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}),
        Reply.tool_call("finish", {"summary": "heard"}),
    )
    stop = cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/y"}))
    sid = cli.vigil.json("start", talk, "--agent", agent(), "--approve-tools", "http_fetch")["id"]
    doomed = cli.vigil.json("start", stop, "--agent", agent(), "--approve-tools", "http_fetch")
    wait_approval(cli.database_url, sid, "a1-0")
    wait_approval(cli.database_url, doomed["id"], "a1-0")

    said = cli.vigil("say", sid, "-", "--by", "ana", "--json", input="from a file\nline two\n")
    assert said.returncode == 0, explain(said)
    assert json.loads(said.stdout)["accepted"] is True
    empty = cli.vigil("say", sid, "-", input="")
    assert empty.returncode == 2 and "standard input" in one_error_line(empty)
    cli.vigil.ok("approve", sid, "a1-0", "--by", "ana")
    wait_recorded(cli.database_url, sid, "completed")
    _, transcript, _ = read_record(cli.database_url, sid)
    assert "from a file\nline two" in [m.content for m in transcript]

    gone = doomed["id"]
    cancelled = cli.vigil.json("cancel", gone, "--reason", "wrong goal", "--by", "ana")
    assert cancelled == {"id": gone, "cancel": "requested", "by": "ana", "reason": "wrong goal"}
    wait_recorded(cli.database_url, gone, "cancelled")
    lines = cli.vigil.json("history", gone)
    [asked] = [ln for ln in lines if ln["kind"] == "workflow_execution_cancel_requested"]
    assert asked["detail"] == "wrong goal (by ana)"
    # The summary for people leaves Temporal's bookkeeping out; --all shows it.
    summary, everything = cli.vigil.many(("history", gone), ("history", gone, "--all"))
    assert "workflow_task_started" not in summary.stdout
    assert "bookkeeping events not shown" in summary.stderr
    assert "workflow_task_started" in everything.stdout
    assert "wrong goal (by ana)" in summary.stdout


def test_stack_env_makes_the_temporal_cli_work_as_pasted(cli: CLIStack) -> None:
    goal = cli.plan(Reply.tool_call("finish", {"summary": "done"}))
    sid = cli.vigil.json("start", goal, "--agent", agent(), "--wait")["id"]
    # A shell that knows nothing of the stack but vigil's settings (its ports, its state).
    env = {k: v for k, v in cli.vigil.env.items() if not k.startswith("TEMPORAL_")}
    env["VIGIL_TEMPORAL_PORT"] = str(TEST_PORTS["temporal_port"])
    env["VIGIL_CODEC_PORT"] = str(TEST_PORTS["codec_port"])
    shown = cli.vigil("stack", "env", env=env)
    assert shown.returncode == 0, explain(shown)
    printed = shown.stdout
    assert f"export TEMPORAL_ADDRESS=127.0.0.1:{TEST_PORTS['temporal_port']}" in printed
    assert "export TEMPORAL_NAMESPACE=default" in printed
    done = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$({" ".join(CLI)} stack env)" && '
            f"temporal workflow describe --workflow-id {sid} -o json",
        ],
        env={**env, "PATH": "/usr/bin:/bin"},  # `temporal` comes from `stack env` alone
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sid in done.stdout and "AgentSession" in done.stdout


def readme_sql(title: str) -> str:
    """The README's SQL statement under the comment line ``-- {title}`` (as a person pastes it)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"-- {title}"))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(";"))
    return "\n".join(lines[start : end + 1])


def test_stack_psql_runs_the_readme_query_for_waiting_approvals(cli: CLIStack) -> None:
    asks = [
        cli.plan(Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/{n}"}), label=n)
        for n in ("waits", "ends")
    ]
    waiting, gone = (
        cli.vigil.json("start", goal, "--agent", agent(), "--approve-tools", "http_fetch")["id"]
        for goal in asks
    )
    wait_approval(cli.database_url, waiting, "a1-0")
    wait_approval(cli.database_url, gone, "a1-0")
    cli.vigil.ok("cancel", gone, "--by", "ana", "--reason", "not needed")
    wait_recorded(cli.database_url, gone, "cancelled")

    # The password comes from the stack's settings, not from the command line.
    query = readme_sql("Approvals still waiting for a person")
    shown = cli.vigil("stack", "psql", "-A", "-t", "-c", query)
    assert shown.returncode == 0, explain(shown)
    assert f"{waiting}|a1-0|http_fetch|" in shown.stdout
    assert gone not in shown.stdout  # its approval was never decided, but no one waits for it
    cli.vigil.ok("cancel", waiting)


def test_hints_name_commands_as_the_cli_was_started(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIGIL_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
    }

    def no_database(**extra: str) -> str:
        done = subprocess.run(
            [*CLI, "memory", "search", "anything", "--json"],
            cwd=str(tmp_path),
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 3, explain(done)
        message: str = json.loads(done.stderr)["error"]["message"]
        return message

    assert "run `vigil stack up`" in no_database()
    assert "run `uv run vigil stack up`" in no_database(UV="/usr/local/bin/uv")  # `uv run`


def test_no_database_says_where_it_looked_and_how_to_name_a_stack(tmp_path: Path) -> None:
    # A shell in another folder than the one the stack was started from, no DATABASE_URL.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIGIL_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
    }
    done = subprocess.run(
        [*CLI, "memory", "search", "anything", "--agent", "someone"],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, explain(done)
    line = one_error_line(done)
    assert line.startswith("error: no database:"), explain(done)
    assert f"{tmp_path}/.vigil" in line and "VIGIL_STATE_DIR" in line, line


def test_an_empty_session_id_is_an_unknown_session(cli: CLIStack) -> None:
    """`vigil show ""` (and every command that asks Temporal) printed Temporal's own
    "WorkflowId is not set on request" and exited 1; `export ""` said no such session."""
    calls = [
        ("show", ""),
        ("transcript", ""),
        ("history", ""),
        ("cancel", ""),
        ("say", "", "hi"),
        ("pause", ""),
        ("artifact", "list", ""),
    ]
    for args, done in zip(calls, cli.vigil.many(*calls), strict=True):
        assert done.returncode == 4, (args, explain(done))
        assert one_error_line(done) == "error: no session with id ''", (args, explain(done))
