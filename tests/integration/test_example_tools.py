"""The example tool package (examples/ops_tools) and ``vigil tools``: the Python tool
loads and runs, the MCP server lists and answers, the example agent file is valid."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.cli import ROOT, Vigil, one_error_line
from vigil.activities.tools.loader import load_python_tools
from vigil.activities.tools.mcp import McpServers, list_mcp_tools
from vigil.activities.tools.python import ToolContext
from vigil.activities.tools.registry import ToolFailed
from vigil.schema.agents import AgentSpec, McpServerSpec
from vigil.schema.tools import BUILTIN_TOOLS

EXAMPLE_SERVER = McpServerSpec(
    name="ops", command=[sys.executable, str(ROOT / "examples/ops_tools/mcp_server.py")]
)


def vigil_cli() -> Vigil:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    return Vigil({**env, "COLUMNS": "200"})


async def test_the_python_tool_measures_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text("x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 100)
    disk_usage = load_python_tools(["examples.ops_tools.tools"], entry_points=False)["disk_usage"]
    ctx = ToolContext(
        session_id="s", agent_id="a", step=1, tool="disk_usage", call_id="c", idempotency_key="k"
    )
    monkeypatch.chdir(tmp_path)  # the worker's working folder
    usage = await disk_usage.invoke({"path": ".", "top": 1}, ctx)
    assert (usage.files, usage.bytes) == (2, 110)
    assert [(b.path, b.bytes) for b in usage.biggest] == [("sub/b.bin", 100)]
    assert (await disk_usage.invoke({"path": "sub"}, ctx)).files == 1
    # It says it measures the worker's working folder, and takes no approval: the
    # disk outside it (`/`, `..`) was measured all the same.
    for outside in ("/", "..", "sub/../..", str(tmp_path.parent)):
        with pytest.raises(ToolFailed, match="outside the worker's working folder"):
            await disk_usage.invoke({"path": outside}, ctx)


async def test_the_mcp_server_lists_and_answers(tmp_path: Path) -> None:
    listed = {t.name: t for t in await list_mcp_tools(EXAMPLE_SERVER)}
    assert set(listed) == {"ops.log_levels", "ops.checksum"}
    assert all(t.effects == "none" for t in listed.values())
    with (tmp_path / "stderr.log").open("w") as errlog:
        servers = McpServers(errlog=errlog)
        try:
            log = "INFO start\nERROR disk full\nWARNING slow\nERROR again\n"
            out = await servers.call(EXAMPLE_SERVER, "log_levels", {"log": log}, timeout=20)
        finally:
            await servers.aclose()
    assert out.data == {"INFO": 1, "ERROR": 2, "WARN": 1}


def test_the_example_agent_file_is_valid() -> None:
    spec = AgentSpec.model_validate(tomllib.loads((ROOT / "examples/agents/ops.toml").read_text()))
    assert [t.name for t in spec.tools] == ["disk_usage", "write_artifact"]
    (server,) = spec.mcp_servers
    assert server.command == ["python", "examples/ops_tools/mcp_server.py"]
    assert (ROOT / server.command[1]).exists()


def test_vigil_tools_list_shows_catalog_entries() -> None:
    listed = vigil_cli().json("tools", "list", "--tools", "examples.ops_tools.tools")
    (entry,) = [t for t in listed if t["name"] == "disk_usage"]
    assert entry["kind"] == "python" and entry["effects"] == "none"
    assert set(entry["parameters"]["properties"]) == {"path", "top"}


def test_vigil_tools_list_shows_the_builtins_and_their_arguments() -> None:
    cli = vigil_cli()
    listed = {t["name"]: t for t in cli.json("tools", "list", "--no-entry-points")}
    assert set(listed) == set(BUILTIN_TOOLS)
    fetch = listed["http_fetch"]
    assert (fetch["kind"], fetch["effects"]) == ("builtin", "external")
    assert fetch["parameters"] == BUILTIN_TOOLS["http_fetch"].parameters
    with_python = cli.json("tools", "list", "--tools", "examples.ops_tools.tools")
    assert {t["name"] for t in with_python} >= {*BUILTIN_TOOLS, "disk_usage"}
    only_python = cli.json("tools", "list", "--tools", "examples.ops_tools.tools", "--no-builtins")
    assert not {t["name"] for t in only_python} & set(BUILTIN_TOOLS)
    table = cli("tools", "list", "--no-entry-points", env={"COLUMNS": "250"})
    assert table.returncode == 0 and "no tools" not in table.stdout
    assert "name: string, content: string, mime_type?: string" in table.stdout
    assert 'kind?: "fact"|"reflection"|"lesson"' in table.stdout


def test_vigil_tools_mcp_lists_a_server_and_names_a_broken_one() -> None:
    cli = vigil_cli()
    cmd = f"{sys.executable} examples/ops_tools/mcp_server.py"
    listed = cli.json("tools", "mcp", "ops", "--command", cmd, timeout=90)
    assert {t["name"] for t in listed} == {"ops.log_levels", "ops.checksum"}
    done = cli("tools", "mcp", "ops", "--command", "/bin/false", timeout=90)
    assert done.returncode == 1
    assert one_error_line(done).startswith("error: MCP server ops could not start")
    bad = cli("tools", "list", "--tools", "no_such_module_here")
    assert bad.returncode == 2
    assert "cannot import tools module 'no_such_module_here'" in one_error_line(bad)
