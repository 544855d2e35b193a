"""Human control from the plain `temporal` CLI with the JSON that README.md documents:
signals, validated updates (a refusal carries the validator's reason), the `state` query
and Temporal's cancel, against the real dev server and a real `vigil worker`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import (
    ROOT,
    TEMPORAL_ADDRESS,
    read_record,
    requests_for,
    wait_approval,
    wait_recorded,
)
from tests.support.llm_stub import Reply
from tests.support.teststack import test_stack_settings as stack_settings
from vigil.workers.codec import codec_token
from vigil.workers.stack import Stack
from vigil.workers.stack.services import TemporalDevServer

pytestmark = pytest.mark.integration

README_ROW = re.compile(r"^\| `(\w+)` \| `(\{.*?\})`", re.MULTILINE)


@pytest.fixture(scope="module")
def documented() -> dict[str, dict[str, Any]]:
    """The JSON input of each signal, exactly as README.md's table documents it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = {name: json.loads(body) for name, body in README_ROW.findall(text)}
    assert set(rows) == {"approve", "reject", "pause", "resume", "message", "redirect", "wake"}
    return rows


@pytest.fixture(scope="module")
def temporal(stack: Stack) -> Path:
    settings = stack.settings
    server = TemporalDevServer(
        settings.resolved_state_dir,
        settings.resolved_bin_cache,
        settings.temporal_port,
        settings.temporal_ui_port,
    )
    return server.binary(lambda _: None)


def codec_env() -> dict[str, str]:
    """Payloads are encrypted: the CLI reads them through the stack's codec server, set up
    as README.md says (TEMPORAL_CODEC_ENDPOINT / TEMPORAL_CODEC_AUTH)."""
    settings = stack_settings()
    return {
        **os.environ,
        "TEMPORAL_CODEC_ENDPOINT": f"http://{settings.codec_host}:{settings.codec_port}",
        "TEMPORAL_CODEC_AUTH": f"Bearer {codec_token(settings)}",
    }


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args, "--address", TEMPORAL_ADDRESS],
        capture_output=True,
        text=True,
        timeout=60,
        env=codec_env(),
    )


def ok(binary: Path, *args: str) -> str:
    done = run(binary, *args)
    assert done.returncode == 0, f"temporal {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def with_values(doc: dict[str, Any], **values: Any) -> str:
    """The documented payload with its example values replaced (same keys, no others)."""
    assert set(values) <= set(doc), (values, doc)
    return json.dumps({**doc, **values})


def state(binary: Path, session_id: str) -> dict[str, Any]:
    out = ok(
        binary, "workflow", "query", "--workflow-id", session_id, "--name", "state", "-o", "json"
    )
    result: dict[str, Any] = json.loads(out)["queryResult"][0]
    return result


def test_approve_by_signal_and_update(
    cli: CLIStack, temporal: Path, documented: dict[str, dict[str, Any]]
) -> None:
    url = cli.stub.url
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": f"{url}/first"}),
        Reply.tool_call("http_fetch", {"url": f"{url}/second"}),
        Reply.tool_call("finish", {"summary": "done by the book"}),
    )
    sid = cli.vigil.json("start", goal, "--agent", "tctl", "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")

    current = state(temporal, sid)
    assert current["status"] == "waiting_approval" and current["session_id"] == sid
    assert [a["approval_id"] for a in current["pending_approvals"]] == ["a1-0"]

    # An update the validator refuses fails with its reason and changes nothing.
    refused = run(
        temporal,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        sid,
        "--name",
        "approve_update",
        "--input",
        with_values(documented["approve"], approval_id="a9-9", edited_arguments=None),
    )
    assert refused.returncode != 0
    assert "unknown approval id 'a9-9' (pending: a1-0)" in refused.stderr + refused.stdout
    assert state(temporal, sid)["pending_approvals"][0]["approval_id"] == "a1-0"

    # README's approve signal in full: note and edited arguments.
    ok(
        temporal,
        "workflow",
        "signal",
        "--workflow-id",
        sid,
        "--name",
        "approve",
        "--input",
        with_values(
            documented["approve"], approval_id="a1-0", edited_arguments={"url": f"{url}/edited"}
        ),
    )
    wait_approval(cli.database_url, sid, "a2-0")
    out = ok(
        temporal,
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        sid,
        "--name",
        "approve_update",
        "--input",
        '{"approval_id":"a2-0","by":"ana"}',
        "-o",
        "json",
    )
    assert "approved a2-0" in out

    row = wait_recorded(cli.database_url, sid, "completed")
    assert row.summary == "done by the book"
    _, transcript, events = read_record(cli.database_url, sid)
    tools = [m.content for m in transcript if m.role == "tool"]
    assert "GET /edited" in tools[0] and "GET /second" in tools[1]
    decided = {e.payload["approval_id"]: e for e in events if e.kind == "approval_decided"}
    assert decided["a1-0"].actor == documented["approve"]["by"]
    assert decided["a1-0"].reason == documented["approve"]["note"]
    assert decided["a1-0"].payload["edited_arguments"] == {"url": f"{url}/edited"}
    assert decided["a2-0"].actor == "ana"
    assert not [e for e in events if e.kind == "input_rejected"]


def test_pause_message_reject_resume_by_signal(
    cli: CLIStack, temporal: Path, documented: dict[str, dict[str, Any]]
) -> None:
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": "http://127.0.0.1:9/"}),
        Reply.text("fine, I will not"),
    )
    sid = cli.vigil.json("start", goal, "--agent", "tctl", "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")

    def signal(name: str, payload: str) -> None:
        ok(temporal, "workflow", "signal", "--workflow-id", sid, "--name", name, "--input", payload)

    signal("pause", json.dumps(documented["pause"]))
    signal("message", json.dumps(documented["message"]))
    signal("reject", with_values(documented["reject"], approval_id="a1-0"))
    wait_recorded(cli.database_url, sid, "paused")
    held = state(temporal, sid)
    assert held["paused"] is True and held["status"] == "paused"
    assert held["rejected_inputs"] == 0
    assert len(requests_for(cli.stub, goal)) == 1, "a paused session called the model"

    signal("resume", json.dumps(documented["resume"]))
    wait_recorded(cli.database_url, sid, "completed")
    second = requests_for(cli.stub, goal)[1].body["messages"]
    assert [m["content"] for m in second if m["role"] == "user"] == [
        goal,
        documented["message"]["text"],
    ]
    tool = next(m for m in second if m["role"] == "tool")
    assert documented["reject"]["reason"] in tool["content"]
    _, _, events = read_record(cli.database_url, sid)
    by_kind = {e.kind: e for e in events}
    assert by_kind["session_paused"].actor == documented["pause"]["by"]
    assert by_kind["session_paused"].reason == documented["pause"]["reason"]
    assert by_kind["session_resumed"].actor == documented["resume"]["by"]
    assert by_kind["human_message"].actor == documented["message"]["by"]


def test_cancel_from_temporal(cli: CLIStack, temporal: Path) -> None:
    goal = cli.plan(Reply.tool_call("http_fetch", {"url": "http://127.0.0.1:9/"}))
    sid = cli.vigil.json("start", goal, "--agent", "tctl", "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    ok(temporal, "workflow", "cancel", "--workflow-id", sid)
    row = wait_recorded(cli.database_url, sid, "cancelled")
    assert row.summary == "cancelled by a human"
    described = json.loads(ok(temporal, "workflow", "describe", "--workflow-id", sid, "-o", "json"))
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_CANCELED"
