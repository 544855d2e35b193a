"""An agent's catalog from what its Python tools and MCP servers offer: entries adjust
them, a server's unlisted tools join, names nobody offers are errors at their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import py_tools
from vigil.activities.agents.catalog import ToolSources, UnknownTool, describe_tools
from vigil.activities.agents.files import AgentFileError, load
from vigil.schema.agents import AgentSpec, ToolDescriptor

ECHO = ToolDescriptor(name="ops.echo", kind="mcp", effects="external", server="ops")
PEEK = ToolDescriptor(name="ops.peek", kind="mcp", effects="none", server="ops")
SOURCES = ToolSources(
    python={"word_count": py_tools.word_count.describe()}, mcp={"ops": [ECHO, PEEK]}
)
SPEC = AgentSpec.model_validate(
    {
        "name": "ops",
        "tools": [
            {"name": "word_count", "timeout_seconds": 9},
            {"name": "ops.echo", "approval": "never"},
            {"name": "read_artifact"},
        ],
        "mcp_servers": [{"name": "ops", "command": ["python", "server.py"]}],
    }
)


def test_entries_adjust_offered_tools_and_servers_add_the_rest() -> None:
    tools = {t.name: t for t in describe_tools(SPEC, SOURCES)}
    assert list(tools) == ["word_count", "ops.echo", "read_artifact", "ops.peek", "finish"]
    count = tools["word_count"]
    assert (count.kind, count.effects, count.timeout_seconds) == ("python", "none", 9)
    assert count.parameters["required"] == ["text"]
    assert (tools["ops.echo"].approval, tools["ops.echo"].server) == ("never", "ops")
    assert tools["ops.peek"].approval == "auto"


def test_names_nobody_offers() -> None:
    nope = SPEC.tools[0].model_copy(update={"name": "ops.nope"})
    bad = SPEC.model_copy(update={"tools": [SPEC.tools[0], nope]})
    with pytest.raises(UnknownTool, match=r"MCP server ops offers no tool 'ops\.nope'") as exc:
        describe_tools(bad, SOURCES)
    assert exc.value.loc == ("tools", 1, "name")
    with pytest.raises(UnknownTool, match="tools of MCP server ops were not listed"):
        describe_tools(SPEC, ToolSources(python=SOURCES.python))
    with pytest.raises(UnknownTool, match="loaded: none; load modules with --tools"):
        describe_tools(SPEC.model_copy(update={"mcp_servers": []}), ToolSources())


def test_a_python_tool_not_loaded_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        'name = "a"\n\n[[tools]]\nname = "read_artifact"\n\n[[tools]]\nname = "word_count"\n'
    )
    with pytest.raises(AgentFileError) as exc:
        load(path)
    (line,) = exc.value.lines()
    assert line.startswith(f"{path}:7: tools[1].name: unknown tool 'word_count'"), line
    loaded = load(path, ToolSources(python=SOURCES.python))
    assert [t.name for t in loaded.tools] == ["read_artifact", "word_count", "finish"]
