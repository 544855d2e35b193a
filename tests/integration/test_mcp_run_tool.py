"""MCP tools through ``vigil.run_tool`` on a real worker: validated against the listed
schema, tool errors recorded for the model, one server process reused by the worker and
stopped with it."""

from __future__ import annotations

import os
import sys
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.mcp_probe import stdio_spec
from tests.support.tool_call_workflow import AskedCall
from tests.support.tool_calls import model_asked, recorded, tool_caller
from vigil.activities.tools.mcp import list_mcp_tools
from vigil.schema.agents import ToolDescriptor
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_mcp_tools_run_as_activities(
    client: Client, settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    server = stdio_spec()
    catalog = {t.name: t for t in await list_mcp_tools(server)}

    async def ask(name: str, arguments: dict[str, object], agent: str | None = None) -> AskedCall:
        whole = list(catalog.values()) if agent else None  # one version for all its calls
        return await model_asked(
            sessionmaker, name, arguments, tool=catalog[name], mcp_server=server, agent=agent,
            catalog=whole,
        )  # fmt: skip

    async with tool_caller(client, settings, f"tq-mcp-{uuid.uuid4()}") as caller:
        call = await ask("probe.echo", {"text": "hi", "times": 3})
        out = await caller.call(call)
        assert (out.ok, out.preview) == (True, "hihihi")
        message, event = await recorded(sessionmaker, call)
        assert message is not None and message.name == "probe.echo"
        assert event is not None and event.payload["data"] == {"result": "hihihi"}

        bad = await caller.call(await ask("probe.echo", {"text": 7}))
        assert (bad.ok, bad.preview) == (
            False,
            "error: invalid arguments for probe.echo at text: 7 is not of type 'string'",
        )

        failed = await caller.call(await ask("probe.fail", {"message": "quota exceeded"}))
        assert not failed.ok and failed.error_type is None
        assert (
            failed.preview.startswith("error: probe.fail: ") and "quota exceeded" in failed.preview
        )

        keyed = await ask("probe.idempotency_key", {})
        sent = await caller.call(keyed)
        assert sent.preview == f"vigil:{keyed.session_id}:1:0"  # in the request's _meta

        agent = f"tools-test-{uuid.uuid4().hex[:12]}"
        first = await caller.call(await ask("probe.pid", {}, agent))
        second = await caller.call(await ask("probe.pid", {}, agent))
        assert first.preview == second.preview  # one server process for the agent
        other = await caller.call(await ask("probe.pid", {}))
        assert other.preview != first.preview  # another agent's: a process of its own

        crashed = await caller.call(await ask("probe.crash", {}, agent))
        assert not crashed.ok and "closed the connection during crash" in crashed.preview
        third = await caller.call(await ask("probe.pid", {}, agent))
        assert third.ok and third.preview != first.preview  # started again
    with pytest.raises(ProcessLookupError):
        os.kill(int(third.preview), 0)  # stopped with the worker


async def test_a_server_that_fails_at_start_tells_the_model_why(
    client: Client, settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    failing = "import sys; sys.stderr.write('no API key in PROBE_KEY\\n'); sys.exit(3)"
    server = stdio_spec().model_copy(update={"command": [sys.executable, "-c", failing]})
    tool = ToolDescriptor(
        name="probe.echo", kind="mcp", effects="none", server="probe", timeout_seconds=10
    )
    async with tool_caller(client, settings, f"tq-mcp-{uuid.uuid4()}") as caller:
        call = await model_asked(
            sessionmaker, "probe.echo", {"text": "hi"}, tool=tool, mcp_server=server
        )
        out = await caller.call(call)
    assert not out.ok
    assert out.preview.startswith("error: MCP server probe could not start: ")
    assert out.preview.endswith("; its stderr ends: no API key in PROBE_KEY")
    message, _ = await recorded(sessionmaker, call)
    assert message is not None and "its stderr ends: no API key in PROBE_KEY" in message.content
