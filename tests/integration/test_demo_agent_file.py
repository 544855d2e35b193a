"""`vigil demo` runs the agent of examples/agents/ops.toml: applied as `vigil agent apply`
applies it, its Python tool and MCP server used on the scripted model, one approval
before the report; what it tells is what the tools returned."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from tests.support.cli import Vigil, cli_env, explain
from tests.support.teststack import TEST_PORTS
from vigil.workers.demo import GOAL, REPORT
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration


def demo_cli(stack: Stack, database_url: str, tmp_path: Path) -> Vigil:
    env = cli_env(
        database_url=database_url,
        state_dir=stack.settings.resolved_state_dir,
        task_queue="tq-demo",
        model_url="http://127.0.0.1:9/v1",  # unused: the agent names the scripted connection
        artifact_dir=tmp_path / "artifacts",
    )
    env.pop("VIGIL_ALLOW_UNDEFINED_AGENTS")  # the demo's agent has a definition
    env["VIGIL_API_PORT"] = str(TEST_PORTS["api_port"])  # the test stack's API
    return Vigil(env)


def test_the_demo_runs_the_example_agent(stack: Stack, database_url: str, tmp_path: Path) -> None:
    done = demo_cli(stack, database_url, tmp_path)(
        "demo", "--auto-approve", "--by", "tester", timeout=240
    )
    assert done.returncode == 0, explain(done)
    out = done.stdout
    # The demo's own worker logs to stderr, warnings only: its start-up lines came between
    # the demo's.
    assert "warmed up" not in out + done.stderr, explain(done)
    assert re.search(
        r"agent ops \(examples/agents/ops\.toml\): (applied as|unchanged,) version", out
    )
    assert "The agent wants to run write_artifact(" in out
    assert re.search(r"uv run vigil approve \S+ a2-0", out)
    assert "temporal workflow signal --workflow-id" in out and "--name approve" in out
    # Aimed at the stack that runs (its port, not Temporal's default), on one line.
    [signal_line] = [ln for ln in out.splitlines() if "temporal workflow signal" in ln]
    assert f"--address 127.0.0.1:{TEST_PORTS['temporal_port']} --namespace default" in signal_line

    # The story is the tools' own results, as the transcript holds them.
    levels = json.loads(out.split("tool:ops.log_levels ", 1)[1].split("\n#", 1)[0])
    assert levels == {"INFO": 3, "WARN": 1, "ERROR": 2}
    told = ", ".join(f"{k} {v}" for k, v in sorted(levels.items()))
    story = out.split("What the tools returned (from the record)", 1)[1]
    assert f"ops.log_levels: {told}" in story
    usage = json.loads(out.split("tool:disk_usage ", 1)[1].split("\n#", 1)[0])
    assert f"disk_usage: {usage['files']} files, {usage['bytes']} bytes" in story
    assert "write_artifact: stored artifact 'ops-report.md'" in story
    api = f"http://127.0.0.1:{TEST_PORTS['api_port']}/v1"
    assert f"HTTP API {api} (docs {api}/docs)" in out
    # What is left running, and what stops it.
    assert out.rstrip().endswith("`uv run vigil stack down` stops it."), out[-400:]
    assert re.search(rf"curl -N .* {re.escape(api)}/sessions/ops-\S+/stream", out), out
    assert "(approved by tester)" in story
    assert "status completed" in out
    # The model's last words quote the tools' results, not the script's hopes.
    summary = out.split("\nsummary ", 1)[1]
    assert "ops-report.md once a human approved it: stored artifact 'ops-report.md'" in summary
    assert "{last_result}" not in out
    # The report names the goal it was written for (the scripted model's {goal}).
    approve = re.search(r"uv run vigil approve (\S+) a2-0", out)
    assert approve is not None
    report = demo_cli(stack, database_url, tmp_path).ok(
        "artifact", "get", approve.group(1), REPORT, "-o", "-"
    )
    assert f"Goal: {GOAL}" in report.stdout, explain(report)


def test_the_demo_leaves_a_users_own_ops_agent_alone(
    stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """Runs after the test above (which applied the example as ``ops``): a definition of
    ``ops`` from another file is the user's, and the demo runs its file as ``ops-demo``."""
    vigil = demo_cli(stack, database_url, tmp_path)
    mine = tmp_path / "agents" / "ops.toml"
    mine.parent.mkdir()
    mine.write_text(
        'name = "ops"\nsystem_prompt = "You are my own ops agent. Goal: {goal}"\n'
        '[[tools]]\nname = "write_artifact"\n'
    )
    vigil.ok("agent", "apply", str(mine))
    before = vigil.json("agent", "show", "ops")
    assert before["source"] == str(mine)

    done = vigil("demo", "--auto-approve", "--by", "tester", timeout=240)
    assert done.returncode == 0, explain(done)
    version = before["version"]
    assert re.search(
        rf"agent ops has a definition of its own \(version {version}, from .*ops\.toml\): "
        r"the demo leaves it as it is and runs examples/agents/ops\.toml as agent ops-demo",
        done.stdout,
    ), done.stdout
    assert re.search(
        r"agent ops-demo \(examples/agents/ops\.toml\): (applied as|unchanged,)", done.stdout
    )
    assert "status completed" in done.stdout
    after = vigil.json("agent", "show", "ops")
    assert (after["version"], after["source"]) == (before["version"], str(mine))
    assert "my own ops agent" in after["spec"]["system_prompt"]


@pytest.mark.parametrize("how", ["ctrl-c", "closed-pipe"])
def test_an_interrupted_demo_cancels_its_session(
    stack: Stack, database_url: str, tmp_path: Path, how: str
) -> None:
    """The demo's session runs on a task queue of the demo's own: interrupted (`vigil demo
    | head`, Ctrl-C), the demo left it running where no worker would ever take it."""
    vigil = demo_cli(stack, database_url, tmp_path)
    proc = vigil.popen("demo", "--auto-approve", "--by", "tester")
    assert proc.stdout is not None and proc.stderr is not None
    sid = None
    for line in proc.stdout:
        if line.startswith("session "):
            sid = line.split()[1]
            break
    assert sid is not None, proc.stderr.read()
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    else:
        proc.stdout.close()  # as `head` does: the demo's next line has nowhere to go
    try:
        _, err = proc.communicate(timeout=60)
    except ValueError:  # stdout closed: wait on the rest
        err = proc.stderr.read()
        proc.wait(timeout=60)
    assert proc.returncode != 0
    assert f"vigil demo: cancelled session {sid}" in err, err
    shown = vigil.json("show", sid)
    assert shown["session"]["status"] == "cancelled", shown["session"]
