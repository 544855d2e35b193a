"""MCP over streamable HTTP with a real server process on a loopback port: a bearer
credential resolved by name, tool errors, a hang, and a crash of the server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.mcp_probe import HttpProbe
from vigil.activities.tools.mcp import McpServerError, McpServers, list_mcp_tools
from vigil.activities.tools.registry import ToolFailed

TOKEN = "probe-secret-7"
CREDENTIALS = {"PROBE_TOKEN": TOKEN}


async def from_table(name: str) -> str | None:
    """Stands for the encrypted credential table: any async name -> value lookup plugs in."""
    return CREDENTIALS.get(name)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProbe]:
    with HttpProbe(tmp_path_factory.mktemp("mcp") / "http.log", token=TOKEN) as probe:
        yield probe


@pytest.fixture
async def servers() -> AsyncIterator[McpServers]:
    pool = McpServers(from_table)
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_tools_are_listed_with_the_credential(web: HttpProbe) -> None:
    tools = await list_mcp_tools(web.spec(credential="PROBE_TOKEN"), from_table)
    assert "web.echo" in {t.name for t in tools}
    assert all(t.kind == "mcp" and t.server == "web" for t in tools)


async def test_the_default_resolver_reads_the_environment(
    web: HttpProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_TEST_PROBE_TOKEN", TOKEN)
    tools = await list_mcp_tools(web.spec(credential="VIGIL_TEST_PROBE_TOKEN"))
    assert tools


async def test_a_missing_credential_is_named(web: HttpProbe, servers: McpServers) -> None:
    with pytest.raises(ToolFailed, match="credential 'NOT_SET_ANYWHERE' of MCP server web"):
        await servers.call(
            web.spec(credential="NOT_SET_ANYWHERE"), "echo", {"text": "x"}, timeout=5
        )
    with pytest.raises(McpServerError, match="is not set"):
        await list_mcp_tools(web.spec(credential="NOT_SET_ANYWHERE"), from_table)


async def test_a_wrong_credential_is_refused(web: HttpProbe) -> None:
    async def wrong(name: str) -> str | None:
        return "not-the-token"

    with pytest.raises(McpServerError, match="could not start"):
        await list_mcp_tools(web.spec(credential="PROBE_TOKEN"), wrong, timeout=10)


async def test_calls_errors_and_a_hang(web: HttpProbe, servers: McpServers) -> None:
    spec = web.spec(credential="PROBE_TOKEN")
    assert (await servers.call(spec, "echo", {"text": "hi"}, timeout=10)).text == "hi"
    with pytest.raises(ToolFailed, match=r"web\.fail: .*no such table"):
        await servers.call(spec, "fail", {"message": "no such table"}, timeout=10)
    with pytest.raises(ToolFailed, match=r"web\.hang timed out after 0\.5s"):
        await servers.call(spec, "hang", {}, timeout=0.5)
    assert (await servers.call(spec, "echo", {"text": "again"}, timeout=10)).text == "again"


async def test_a_server_crash_is_a_tool_error_and_calls_work_once_it_is_back(
    tmp_path: Path, servers: McpServers
) -> None:
    with HttpProbe(tmp_path / "crash.log", token=TOKEN) as probe:
        spec = probe.spec(credential="PROBE_TOKEN")
        before = (await servers.call(spec, "pid", {}, timeout=10)).text
        with pytest.raises(ToolFailed, match=r"crash"):
            await servers.call(spec, "crash", {}, timeout=10)
        assert not probe.alive()
        probe.restart()  # its supervisor brings it back on the same port
        after = (await servers.call(spec, "pid", {}, timeout=10)).text
        assert after != before
