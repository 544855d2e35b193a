"""The installed wheel: one top-level package, beside PyPI's `schema`, and it runs.

Builds vigil's wheel, installs it into a fresh virtual environment together with the
PyPI package `schema` (a name vigil's repository also uses for a folder), and from that
environment runs a worker and a session against the test stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cli import ROOT, LineReader, SessionScripts, cli_env, poll
from tests.support.llm_stub import LLMStub, Reply
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration


@dataclass
class Installed:
    python: Path
    vigil: Path
    wheel: Path


def _run(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH (the test command installs it)")
    tmp = tmp_path_factory.mktemp("wheel")
    _run(uv, "build", "--wheel", "--out-dir", tmp / "dist", cwd=ROOT)
    [wheel] = sorted((tmp / "dist").glob("vigil-*.whl"))
    # The locked versions of vigil's runtime dependencies (already in uv's cache).
    reqs = tmp / "requirements.txt"
    exported = _run(
        uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", cwd=ROOT
    )
    reqs.write_text(exported.stdout)
    venv = tmp / "venv"
    _run(uv, "venv", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--python", python, "-r", reqs, wheel, "schema==0.7.7")
    yield Installed(python=python, vigil=venv / "bin" / "vigil", wheel=wheel)


def test_the_wheel_holds_only_the_vigil_package(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"vigil"}
    assert "vigil/schema/migrations/env.py" in names


def test_vigil_and_pypi_schema_live_side_by_side(installed: Installed) -> None:
    probe = (
        "import json, schema, vigil, vigil.schema.payloads as p;"
        "from vigil.workflows.session import AgentSession;"
        "print(json.dumps({'schema': schema.__file__, 'has_Schema': hasattr(schema, 'Schema'),"
        "'vigil': vigil.__file__, 'payloads': p.__file__}))"
    )
    out = json.loads(_run(installed.python, "-c", probe, cwd="/").stdout)
    site = Path(out["vigil"]).parent.parent
    assert out["has_Schema"], "PyPI's schema package was shadowed"
    assert Path(out["schema"]).is_relative_to(site)
    assert Path(out["payloads"]).is_relative_to(site / "vigil")
    for name in ("workflows", "workers", "activities"):
        assert not (site / name).exists(), f"the wheel put {name}/ at top level"


USER_TOOLS = '''
import vigil


@vigil.tool(effects="none")
async def shout(text: str) -> str:
    """Say a text louder.

    Args:
        text: What to say.
    """
    return text.upper() + "!"
'''


def test_a_session_with_a_user_tool_runs_from_the_installed_wheel(
    installed: Installed, stack: Stack, database_url: str, tmp_path: Path
) -> None:
    """A user's module with a `@vigil.tool`, an agent file naming it, `vigil agent apply`,
    a worker loading the module and a session calling the tool: all from the wheel."""
    (tmp_path / "usertools.py").write_text(USER_TOOLS)
    agent = f"wheel-{uuid.uuid4().hex[:6]}"
    (tmp_path / "agent.toml").write_text(
        f'name = "{agent}"\ntools = [{{ name = "shout" }}, {{ name = "write_artifact" }}]\n'
    )
    scripts = SessionScripts()
    with LLMStub() as stub:
        stub.default = scripts
        env = cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=f"tq-wheel-{uuid.uuid4()}",
            model_url=stub.url_openai,
            artifact_dir=tmp_path / "artifacts",
            PYTHONPATH=str(tmp_path),
            VIGIL_ALLOW_UNDEFINED_AGENTS="0",
        )
        goal = scripts.plan(
            Reply.tool_call("shout", {"text": "from the wheel"}),
            Reply.tool_call("write_artifact", {"name": "note.txt", "content": "written"}),
            Reply.tool_call("finish", {"summary": "shouted and written"}),
        )
        _run(
            installed.vigil,
            "agent",
            "apply",
            "agent.toml",
            "--tools",
            "usertools",
            env=env,
            cwd=tmp_path,
        )
        worker = subprocess.Popen(
            [str(installed.vigil), "worker", "--tools", "usertools"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            with LineReader(worker) as lines:
                up = lambda: any("worker polling" in ln for ln in lines.snapshot())  # noqa: E731
                poll(up, 60, "worker up")
                started = _run(
                    installed.vigil,
                    "start",
                    goal,
                    "--agent",
                    agent,
                    "--wait",
                    "--json",
                    env=env,
                    cwd=tmp_path,
                )
                sid = json.loads(started.stdout)["id"]
                shown = _run(installed.vigil, "show", sid, "--json", env=env, cwd=tmp_path)
        finally:
            worker.terminate()
            worker.wait(30)
    result = json.loads(started.stdout)
    assert result["status"] == "completed", result
    assert "FROM THE WHEEL!" in shown.stdout, shown.stdout[-2000:]
    assert os.path.isdir(tmp_path / "artifacts")
