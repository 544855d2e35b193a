"""MCP over streamable HTTP with a real server process on a loopback port: a bearer
credential resolved by name (the encrypted credential table, or ``env:NAME``), tool
errors, a hang, and a crash of the server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.mcp_probe import HttpProbe
from vigil.activities.credentials import new_key_text
from vigil.activities.tools.mcp import McpServerError, McpServers, list_mcp_tools
from vigil.activities.tools.mcp_connection import McpCredentials
from vigil.activities.tools.registry import ToolFailed
from vigil.workers.credentials import CredentialService
from vigil.workers.models import credential_resolver
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

TOKEN = "probe-secret-7"
STORED = f"probe-token-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def resolve(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> McpCredentials:
    """The worker's resolver, with the token stored sealed in the credential table."""
    keyed = settings.model_copy(update={"secret_key": SecretStr(new_key_text())})
    await CredentialService(keyed, sessionmaker).set(STORED, TOKEN)
    return credential_resolver(keyed, sessionmaker).resolve


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProbe]:
    with HttpProbe(tmp_path_factory.mktemp("mcp") / "http.log", token=TOKEN) as probe:
        yield probe


@pytest.fixture
async def servers(resolve: McpCredentials) -> AsyncIterator[McpServers]:
    pool = McpServers(resolve)
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_tools_are_listed_with_the_credential(
    web: HttpProbe, resolve: McpCredentials
) -> None:
    tools = await list_mcp_tools(web.spec(credential=STORED), resolve)
    assert "web.echo" in {t.name for t in tools}
    assert all(t.kind == "mcp" and t.server == "web" for t in tools)


async def test_the_default_resolver_reads_the_environment(
    web: HttpProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_TEST_PROBE_TOKEN", TOKEN)
    tools = await list_mcp_tools(web.spec(credential="env:VIGIL_TEST_PROBE_TOKEN"))
    assert tools


async def test_a_missing_credential_is_named(
    web: HttpProbe, servers: McpServers, resolve: McpCredentials
) -> None:
    with pytest.raises(
        ToolFailed, match="MCP server web: credential 'not-set-anywhere' is not set"
    ):
        await servers.call(
            web.spec(credential="not-set-anywhere"), "echo", {"text": "x"}, timeout=5
        )
    with pytest.raises(McpServerError, match="is not set"):
        await list_mcp_tools(web.spec(credential="env:VIGIL_TEST_NOT_SET"), resolve)


async def test_a_wrong_credential_is_refused(web: HttpProbe) -> None:
    async def wrong(name: str) -> str:
        return "not-the-token"

    with pytest.raises(McpServerError, match="could not start"):
        await list_mcp_tools(web.spec(credential=STORED), wrong, timeout=10)


async def test_calls_errors_and_a_hang(web: HttpProbe, servers: McpServers) -> None:
    spec = web.spec(credential=STORED)
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
        spec = probe.spec(credential=STORED)
        before = (await servers.call(spec, "pid", {}, timeout=10)).text
        with pytest.raises(ToolFailed, match=r"crash"):
            await servers.call(spec, "crash", {}, timeout=10)
        # The call fails as the connection drops; the process itself may take a moment
        # longer to be reaped on a loaded machine.
        assert probe.proc is not None
        await asyncio.to_thread(probe.proc.wait, 15)
        assert not probe.alive()
        probe.restart()  # its supervisor brings it back on the same port
        after = (await servers.call(spec, "pid", {}, timeout=10)).text
        assert after != before
