"""Text that is not UTF-8, from standard input or an argument, is bad input: exit 2 and the
CLI's one-line (or JSON) error, never a traceback from deep in the serializer."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line, wait_approval
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration

BAD = b"bad \xff utf8"


def json_error(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert "Traceback" not in done.stderr, explain(done)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, explain(done)
    error: dict[str, str] = json.loads(lines[0])["error"]
    return error


def waiting_session(cli: CLIStack) -> str:
    """A live session, held at an approval (control commands reach it)."""
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    agent = f"utf8-{uuid.uuid4().hex[:8]}"
    sid: str = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")[
        "id"
    ]
    wait_approval(cli.database_url, sid, "a1-0")
    return sid


def test_say_from_stdin_that_is_not_utf8_is_bad_input(cli: CLIStack) -> None:
    sid = waiting_session(cli)
    done = cli.vigil.raw("say", sid, "-", "--json", input=BAD)
    assert done.returncode == 2, explain(done)
    error = json_error(done)
    assert error["code"] == "bad_input", error
    assert "standard input is not UTF-8" in error["message"], error

    done = cli.vigil.raw("say", sid, "-", input=BAD)
    assert done.returncode == 2, explain(done)
    assert one_error_line(done).startswith("error: standard input is not UTF-8 text")
    cli.vigil.ok("cancel", sid)


def test_arguments_that_are_not_utf8_are_bad_input(cli: CLIStack) -> None:
    sid = waiting_session(cli)
    calls: list[tuple[str | bytes, ...]] = [
        ("say", sid, BAD),
        ("start", BAD, "--json"),
        ("redirect", sid, BAD, "--json"),
        ("pause", sid, "--reason", BAD, "--json"),
    ]
    for args in calls:
        done = cli.vigil.raw(*args)
        assert done.returncode == 2, explain(done)
        if "--json" in args:
            error = json_error(done)
            assert error["code"] == "bad_input", error
            assert "is not UTF-8" in error["message"], error
        else:
            assert "is not UTF-8" in one_error_line(done)
    cli.vigil.ok("cancel", sid)


def test_a_secret_from_stdin_that_is_not_utf8_is_bad_input(cli: CLIStack) -> None:
    done = cli.vigil.raw("secret", "set", f"S_{uuid.uuid4().hex[:6]}", "--json", input=BAD)
    assert done.returncode == 2, explain(done)
    error = json_error(done)
    assert error["code"] == "bad_input", error
    assert "standard input is not UTF-8" in error["message"], error
