"""`vigil agent apply` describes an agent's Python tools and MCP servers: the servers'
tools are listed when a version is made and kept with it; an unchanged file keeps its
listing, `--refresh` lists again and adds a version only when the tools changed; a tool
nobody offers and a server that cannot be listed are errors at their line. An agent
without MCP servers is described on every apply."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.cli import ROOT, Vigil, cli_env, explain, one_error_line
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

LISTED = ROOT / "tests" / "support" / "mcp_servers" / "listed_server.py"


@pytest.fixture(scope="module")
def vigil(stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Vigil:
    tmp = tmp_path_factory.mktemp("agents")
    return Vigil(
        cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue="unused",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp / "artifacts",
        )
    )


def agent_file(folder: Path, name: str, tools_file: Path, tool: str = "word_count") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        f'\n[[tools]]\nname = "{tool}"\n'
        "\n[[mcp_servers]]\n"
        'name = "listed"\n'
        f'command = ["{sys.executable}", "{LISTED}", "{tools_file}"]\n'
    )
    return path


def test_listing_is_kept_with_the_version_and_refreshed(vigil: Vigil, tmp_path: Path) -> None:
    name = f"lister-{uuid.uuid4().hex[:8]}"
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("alpha\n")
    path = agent_file(tmp_path, name, tools_file)
    apply = ("agent", "apply", str(path), "--tools", "tests.support.py_tools")
    (first,) = vigil.json(*apply)
    assert (first["version"], first["created"]) == (1, True)
    shown = vigil.json("agent", "show", name)
    kinds = {t["name"]: t["kind"] for t in shown["tools"]}
    assert kinds == {"word_count": "python", "listed.alpha": "mcp", "finish": "builtin"}

    tools_file.write_text("alpha\nbeta\n")  # the server now offers more
    (same,) = vigil.json(*apply)
    assert (same["version"], same["created"]) == (1, False)  # not listed again
    (refreshed,) = vigil.json(*apply, "--refresh")
    assert (refreshed["version"], refreshed["created"]) == (2, True)
    assert refreshed["content_hash"] == first["content_hash"]  # the file did not change
    assert (first["tools_changed"], refreshed["tools_changed"]) == (False, True)
    assert "listed.beta" in {t["name"] for t in vigil.json("agent", "show", name)["tools"]}
    diff = vigil.json("agent", "diff", name)
    assert any(line.startswith("+") and "listed.beta" in line for line in diff["lines"])
    (again,) = vigil.json(*apply, "--refresh")
    assert (again["version"], again["created"], again["tools_changed"]) == (2, False, False)
    # A person is told why a version came of an unchanged file (the same hash was shown).
    tools_file.write_text("alpha\n")
    said = vigil.ok(*apply, "--refresh").stdout.strip()
    assert said == (
        f"{name}: version 3 created (its tools changed; the file did not)  "
        f"{first['content_hash'][:12]}  {path}"
    ), said


def test_tools_nobody_offers_are_errors_at_their_line(vigil: Vigil, tmp_path: Path) -> None:
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("alpha\n")
    name = f"lacking-{uuid.uuid4().hex[:8]}"
    path = agent_file(tmp_path, name, tools_file)
    done = vigil("agent", "apply", str(path))  # without --tools: word_count is not loaded
    assert done.returncode == 2
    assert one_error_line(done).startswith(
        f"error: {path}:4: tools[0].name: unknown tool 'word_count'"
    )

    broken = agent_file(tmp_path, f"broken-{uuid.uuid4().hex[:8]}", tmp_path / "missing.txt")
    done = vigil("agent", "apply", str(broken), "--tools", "tests.support.py_tools")
    assert done.returncode == 2
    # The server's own stderr is passed through (it says why), then vigil's one line.
    said, line = done.stderr.strip().splitlines()
    assert said == f"listed_server: no tools file {tmp_path / 'missing.txt'}"
    assert line.startswith(f"error: {broken}:6: mcp_servers[0]: MCP server listed"), line

    done = vigil("agent", "apply", str(path), "--tools", "no_such_module_here")
    assert done.returncode == 2
    assert "cannot import tools module 'no_such_module_here'" in one_error_line(done)
    assert vigil("agent", "show", name).returncode == 4  # nothing was stored


def test_a_python_tools_changed_signature_makes_a_version_without_refresh(
    vigil: Vigil, tmp_path: Path
) -> None:
    """An agent without MCP servers is described again on every apply (its Python tools
    are read from their functions, nothing is started): a tool whose signature changed
    under an unchanged file made no new version, and the worker validated calls against
    the stale schema until someone thought of `--refresh`."""
    name = f"pyonly-{uuid.uuid4().hex[:8]}"
    module = f"apply_tools_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"

    def write_tool(params: str) -> None:
        source.write_text(
            "import vigil\n\n\n"
            '@vigil.tool(effects="none")\n'
            f"async def measure({params}) -> int:\n"
            '    """Measure a thing.\n\n    Args:\n        thing: What to measure.\n    """\n'
            "    return 1\n"
        )

    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n\n[[tools]]\nname = "measure"\n')
    env = {"PYTHONPATH": str(tmp_path)}
    apply = ("agent", "apply", str(path), "--tools", module)
    write_tool("thing: str")
    (first,) = vigil.json(*apply, env=env)
    (same,) = vigil.json(*apply, env=env)
    assert (first["version"], first["created"]) == (1, True)
    assert (same["version"], same["created"]) == (1, False)  # nothing changed: no version
    write_tool("thing: str, unit: str")
    (changed,) = vigil.json(*apply, env=env)
    assert (changed["version"], changed["created"]) == (2, True)
    assert changed["content_hash"] == first["content_hash"]  # the file did not change
    (tool,) = [t for t in vigil.json("agent", "show", name)["tools"] if t["name"] == "measure"]
    assert set(tool["parameters"]["properties"]) == {"thing", "unit"}
    # Applied where the module cannot be imported, an unchanged file keeps its catalog
    # (as before: the tools are described where they can be).
    (elsewhere,) = vigil.json("agent", "apply", str(path))
    assert (elsewhere["version"], elsewhere["created"]) == (2, False)


def test_doctor_names_an_mcp_command_this_host_cannot_start(vigil: Vigil, tmp_path: Path) -> None:
    """An agent applied where its MCP server's command was on the PATH, checked by
    `vigil doctor` on a host (or in a shell) whose PATH lacks it: doctor names the agent,
    the server and the command, where before nothing said so until a session's call
    failed. Where the command is found, the check passes."""
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("alpha\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "listed-mcp"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{LISTED}" "{tools_file}"\n')
    wrapper.chmod(0o755)
    name = f"hosted-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n\n[[mcp_servers]]\nname = "listed"\ncommand = ["listed-mcp"]\n'
    )
    with_bin = {"PATH": f"{bin_dir}:{vigil.env.get('PATH', '')}"}
    (applied,) = vigil.json("agent", "apply", str(path), env=with_bin)
    assert applied["created"] is True

    def tool_checks(env: dict[str, str]) -> list[dict[str, object]]:
        done = vigil("doctor", "--json", env=env, timeout=120)
        return [c for c in json.loads(done.stdout) if c["part"] == "tools"]

    mine = f"MCP server {name}.listed"
    missing = [c for c in tool_checks({}) if c["check"] == mine]
    assert missing == [
        {
            "part": "tools",
            "check": mine,
            "ok": False,
            "detail": "version 1: command 'listed-mcp' not found on this host's PATH",
        }
    ]
    found = tool_checks(with_bin)
    assert not [c for c in found if c["check"] == mine], found
    # A later version without the server is what doctor reads (and other tests see).
    path.write_text(f'name = "{name}"\n')
    (second,) = vigil.json("agent", "apply", str(path))
    assert second["version"] == 2
    assert not [c for c in tool_checks({}) if c["check"] == mine]


def test_doctor_names_an_mcp_script_not_found_from_where_it_runs(
    vigil: Vigil, tmp_path: Path
) -> None:
    """An agent applied from the repository, its server ``python tests/.../listed_server.py``:
    doctor run from another folder (where a worker started there would look for the
    script) said the command was found, and the server then failed to start."""
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("alpha\n")
    relative = str(LISTED.relative_to(ROOT))
    name = f"scripted-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n\n[[mcp_servers]]\nname = "listed"\n'
        f'command = ["python", "{relative}", "{tools_file}"]\n'
    )
    vigil.json("agent", "apply", str(path))  # from the repository (the CLI's folder)
    mine = f"MCP server {name}.listed"

    def checks(cwd: Path) -> list[dict[str, object]]:
        done = Vigil(vigil.env, cwd=cwd)("doctor", "--json", timeout=120)
        return [c for c in json.loads(done.stdout) if c["check"] == mine]

    (missing,) = checks(tmp_path)
    assert missing["ok"] is False
    assert missing["detail"] == f"version 1: its script {relative!r} is not found from {tmp_path}"
    assert checks(ROOT) == []
    path.write_text(f'name = "{name}"\n')
    vigil.json("agent", "apply", str(path))  # what other tests' doctor reads


def test_a_catalog_too_large_for_a_session_is_refused(vigil: Vigil, tmp_path: Path) -> None:
    """An MCP server listing thousands of tools was applied, and then every start failed
    (Temporal refuses a payload past 4 MiB: a traceback in the CLI, a 500 in the API)."""
    name = f"many-{uuid.uuid4().hex[:8]}"
    tools_file = tmp_path / "tools.txt"
    tools_file.write_text("\n".join(f"tool_{i:05d}_{'x' * 40}" for i in range(6000)))
    path = agent_file(tmp_path, name, tools_file)
    done = vigil("agent", "apply", str(path), "--tools", "tests.support.py_tools", timeout=180)
    assert done.returncode == 2, explain(done)
    line = one_error_line(done)
    assert line.startswith(f"error: {path}"), line
    assert ": tools: its 6002 tools take " in line and "a session can carry" in line, (
        line
    )  # 6,000 listed, word_count, finish
    assert vigil("agent", "show", name).returncode == 4  # nothing was stored
