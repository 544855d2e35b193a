"""`vigil start --agent NAME` runs the agent's definition (its budget, approval rules and
prompt) with the options as overrides; an agent with no definition is refused in one line
(exit 4) unless asked for explicitly; schedules check the agent the same way."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, wait_approval
from tests.support.llm_stub import Reply

pytestmark = pytest.mark.integration
STRICT = {"VIGIL_ALLOW_UNDEFINED_AGENTS": "0"}


def define(cli: CLIStack, folder: Path) -> str:
    name = f"def-{uuid.uuid4().hex[:8]}"
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        "system_prompt: 'Careful agent. Goal: {goal}'\n"
        "tools:\n  - name: http_fetch\n    approval: always\n"
        "budget:\n  max_steps: 3\n"
    )
    cli.vigil.ok("agent", "apply", str(path))
    return name


def test_start_uses_the_definition_with_overrides(cli: CLIStack, tmp_path: Path) -> None:
    name = define(cli, tmp_path)
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    sid = cli.vigil.json("start", cli.plan(fetch), "--agent", name)["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    state = cli.vigil.json("show", sid)["state"]
    assert state["budget"]["max_steps"] == 3 and state["agent_version"] == 1
    cli.vigil.ok("cancel", sid)

    sid = cli.vigil.json("start", cli.plan(fetch), "--agent", name, "--max-steps", "5")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    assert cli.vigil.json("show", sid)["state"]["budget"]["max_steps"] == 5
    cli.vigil.ok("cancel", sid)

    done = cli.vigil("start", "a goal", "--agent", name, "--agent-version", "9")
    assert done.returncode == 4, explain(done)
    assert f"agent {name!r} has no version 9 (newest: 1)" in done.stderr


def test_an_agent_without_definition_is_refused(cli: CLIStack) -> None:
    who = f"nobody-{uuid.uuid4().hex[:8]}"
    done = cli.vigil("start", "a goal", "--agent", who, env=STRICT)
    assert done.returncode == 4, explain(done)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert f"agent {who!r} has no definition" in done.stderr
    # What there is, for one who left out --agent or misspelt it (the CLI reads them all).
    assert (
        "; agents with a definition: " in done.stderr and "(name one with --agent)" in done.stderr
    )
    refused = cli.vigil(
        "schedule", "create", f"s-{who}", "--goal", "g", "--agent", who, "--every", "1h",
        env=STRICT,
    )  # fmt: skip
    assert refused.returncode == 4, explain(refused)

    goal = cli.plan(Reply.tool_call("finish", {"summary": "ran undefined"}))
    done = cli.vigil(
        "start", goal, "--agent", who, "--undefined-agent", "--wait", "--json", env=STRICT
    )
    assert done.returncode == 0, explain(done)
    assert '"completed"' in done.stdout
