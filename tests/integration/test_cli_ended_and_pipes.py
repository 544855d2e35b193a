"""A session that ended failed, read through the CLI as a user would: `cancel` says it
ended `failed` (the record's status, not Temporal's), and `export`/`history` into a pipe
whose reader has gone (`| head -1`) exit quietly."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import CLI, explain, one_error_line, wait_recorded
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def failed_session(cli: CLIStack) -> str:
    """A session the model ends with finish's ``succeeded`` false: recorded `failed`."""
    goal = cli.plan(Reply.tool_call("finish", {"summary": "could not do it", "succeeded": False}))
    sid = cli.vigil.json("start", goal, "--agent", f"ops-{uuid.uuid4().hex[:8]}")["id"]
    wait_recorded(cli.database_url, sid, "failed", within=60)
    return str(sid)


def test_cancel_of_a_failed_session_names_failed(cli: CLIStack, failed_session: str) -> None:
    shown = cli.vigil.json("show", failed_session)
    assert shown["session"]["status"] == "failed"
    again = cli.vigil("cancel", failed_session)
    assert again.returncode == 2, explain(again)
    assert "has already ended (failed)" in one_error_line(again)


def closed_reader(cli: CLIStack, *args: str) -> tuple[int, str]:
    """Run `vigil ARGS` with stdout a pipe whose read end is already closed (the reader,
    like `head -1`, went away): returns the exit code and what was said on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*CLI, *args],
            env=cli.vigil.env,
            cwd=cli.vigil.cwd,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("fmt", ["jsonl", "md"])
def test_export_to_a_closed_pipe_is_quiet(cli: CLIStack, failed_session: str, fmt: str) -> None:
    """As `history` does (rich's way: stdout to /dev/null, exit 1, nothing said): no
    BrokenPipeError, no unclosed generator, no connection torn down mid-transaction."""
    history = closed_reader(cli, "history", failed_session)
    assert history == (1, ""), history[1]
    exported = closed_reader(cli, "export", failed_session, "-f", fmt)
    assert exported == history, exported[1]


def test_a_full_disk_is_a_failed_write_not_an_unreachable_server(
    cli: CLIStack, failed_session: str
) -> None:
    """Writing to a full disk (``/dev/full``) said "cannot reach a server: [Errno 28] No
    space left on device" and exited 3, the code for a stack that is down."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*CLI, "export", failed_session],
            env=cli.vigil.env,
            cwd=cli.vigil.cwd,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr and "reach" not in proc.stderr, proc.stderr
