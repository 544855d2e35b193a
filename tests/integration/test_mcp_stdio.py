"""MCP over stdio with a real server process: listing, reuse, errors, crash, hang, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from tests.support.mcp_probe import SERVER, stdio_spec
from tests.support.sessions import until
from vigil.activities.agents.catalog import argument_error
from vigil.activities.tools.mcp import McpServerError, McpServers, list_mcp_tools
from vigil.activities.tools.registry import ToolFailed
from vigil.schema.agents import McpServerSpec

LISTED = Path(__file__).resolve().parents[1] / "support" / "mcp_servers" / "listed_server.py"


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """The servers' stderr (a stdio server's logs and tracebacks land here)."""
    with (tmp_path / "mcp-stderr.log").open("w") as f:
        yield f


@pytest.fixture
async def servers(errlog: TextIO) -> AsyncIterator[McpServers]:
    pool = McpServers(errlog=errlog)
    try:
        yield pool
    finally:
        await pool.aclose()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_until(check: Callable[[], bool], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_tools_are_listed_as_catalog_entries() -> None:
    tools = {t.name: t for t in await list_mcp_tools(stdio_spec(timeout_seconds=7))}
    assert set(tools) == {
        "probe.echo",
        "probe.pid",
        "probe.idempotency_key",
        "probe.crash",
        "probe.hang",
        "probe.fail",
        "probe.refuse",
        "probe.append_line",
        "probe.log",
    }
    echo = tools["probe.echo"]
    assert echo.kind == "mcp" and echo.server == "probe" and echo.timeout_seconds == 7
    assert echo.description == "Repeat a text."
    assert echo.parameters["required"] == ["text"]
    assert echo.effects == "none"  # read-only hint
    assert tools["probe.crash"].effects == "external"  # anything else needs approval


async def test_the_agent_file_chooses_tools_and_missing_ones_are_named() -> None:
    only = await list_mcp_tools(stdio_spec(tools=["echo"]))
    assert [t.name for t in only] == ["probe.echo"]
    with pytest.raises(McpServerError, match="has no tool nope"):
        await list_mcp_tools(stdio_spec(tools=["echo", "nope"]))


async def test_a_command_that_is_no_mcp_server_fails_clearly() -> None:
    spec = stdio_spec().model_copy(update={"command": ["/bin/false"]})
    with pytest.raises(McpServerError, match="could not start"):
        await list_mcp_tools(spec, timeout=10)


FAILS_AT_START = [
    sys.executable,
    "-c",
    "import sys; sys.stderr.write('starting\\nno config at /etc/probe.toml\\n'); sys.exit(3)",
]


async def test_a_server_that_fails_at_start_says_why(
    servers: McpServers, errlog: TextIO, tmp_path: Path
) -> None:
    spec = stdio_spec().model_copy(update={"command": FAILS_AT_START})
    with pytest.raises(ToolFailed) as failed:
        await servers.call(spec, "echo", {"text": "x"}, timeout=10)
    message = str(failed.value)
    assert message.startswith("MCP server probe could not start: ")
    assert message.endswith("; its stderr ends: starting\nno config at /etc/probe.toml")
    errlog.flush()  # the worker's stderr still gets every line
    assert "no config at /etc/probe.toml" in (tmp_path / "mcp-stderr.log").read_text()
    with pytest.raises(McpServerError, match=r"its stderr ends: starting\nno config at"):
        await list_mcp_tools(spec, timeout=10)


NOT_MCP = [sys.executable, "-c", "print('usage: report-tool [--port N]')"]
BANNER_FIRST = [
    sys.executable,
    "-c",
    "import runpy, sys; print('report-tool 1.2 starting', flush=True); "
    f"sys.argv = ['listed', sys.argv[1]]; runpy.run_path({str(LISTED)!r}, run_name='__main__')",
]


async def test_a_program_that_writes_no_mcp_to_stdout_is_told_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = stdio_spec().model_copy(update={"command": NOT_MCP})
    with pytest.raises(McpServerError) as failed:
        await list_mcp_tools(spec, timeout=10)
    message = str(failed.value)
    assert message.startswith("MCP server probe could not start: ")
    assert (
        "it wrote to stdout what is not an MCP message: 'usage: report-tool [--port N]' "
        "(a stdio server writes only protocol messages to stdout; its logs go to stderr)"
    ) in message
    # One line of vigil's for it, not the SDK's traceback.
    assert [r for r in caplog.records if r.exc_info] == []
    said = [r.getMessage() for r in caplog.records if "not an MCP message" in r.getMessage()]
    assert said == ["MCP server probe wrote to stdout what is not an MCP message: "
                    "'usage: report-tool [--port N]'"]  # fmt: skip


async def test_a_server_that_prints_a_banner_first_still_serves(
    servers: McpServers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listing = tmp_path / "tools.txt"
    listing.write_text("echo\n")
    spec = McpServerSpec(name="banner", command=[*BANNER_FIRST, str(listing)])
    assert [t.name for t in await list_mcp_tools(spec, timeout=20)] == ["banner.echo"]
    answered = await servers.call(spec, "echo", {"text": "hi"}, timeout=20)
    assert answered.text == "hi"
    assert [r for r in caplog.records if r.exc_info] == []
    said = {r.getMessage() for r in caplog.records if "not an MCP message" in r.getMessage()}
    assert said == {"MCP server banner wrote to stdout what is not an MCP message: "
                    "'report-tool 1.2 starting'"}  # fmt: skip
    # A call that fails later is not blamed on the banner of its start.
    with pytest.raises(ToolFailed) as late:
        await servers.call(spec, "echo", {"text": "sleep:30"}, timeout=1)
    assert "timed out after 1s" in str(late.value) and "stdout" not in str(late.value)


async def test_a_server_that_cannot_be_spawned_names_the_spawn_error(
    servers: McpServers,
) -> None:
    spec = stdio_spec().model_copy(update={"command": ["/nonexistent/mcp-server"]})
    with pytest.raises(ToolFailed) as failed:
        await servers.call(spec, "echo", {"text": "x"}, timeout=10)
    assert str(failed.value) == (
        "MCP server probe could not start: FileNotFoundError: "
        "[Errno 2] No such file or directory: '/nonexistent/mcp-server'"
    )


async def test_calls_reuse_one_server_process(servers: McpServers) -> None:
    spec = stdio_spec()
    first = await servers.call(spec, "pid", {}, timeout=10)
    again = await servers.call(spec, "pid", {}, timeout=10)
    assert first.text == again.text
    echoed = await servers.call(spec, "echo", {"text": "ab", "times": 2}, timeout=10)
    assert echoed.text == "abab"
    assert echoed.data == {"result": "abab"}


async def test_arguments_are_checked_against_the_listed_schema(servers: McpServers) -> None:
    echo = next(t for t in await servers.list_tools(stdio_spec()) if t.name == "probe.echo")
    assert argument_error(echo, {"text": "x"}) is None
    assert "at text: 3 is not of type 'string'" in (argument_error(echo, {"text": 3}) or "")
    assert "'text' is a required property" in (argument_error(echo, {}) or "")


async def test_a_tool_error_goes_back_to_the_model(servers: McpServers) -> None:
    with pytest.raises(ToolFailed, match=r"^probe\.fail: .*disk is full$"):
        await servers.call(stdio_spec(), "fail", {"message": "disk is full"}, timeout=10)
    assert (await servers.call(stdio_spec(), "echo", {"text": "ok"}, timeout=10)).text == "ok"


async def test_a_crash_mid_call_is_a_tool_error_and_the_next_call_restarts(
    servers: McpServers,
) -> None:
    spec = stdio_spec()
    old = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    with pytest.raises(ToolFailed, match="closed the connection during crash"):
        await servers.call(spec, "crash", {}, timeout=10)
    new = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    assert new != old and gone(old)


async def test_each_agent_has_a_server_process_of_its_own(servers: McpServers) -> None:
    """Two agents naming one server shared its process: what one agent's calls left in it
    (its state; its stderr, which a failed call quotes) reached the other's transcript."""
    spec = stdio_spec()
    alpha = (await servers.call(spec, "pid", {}, timeout=10, agent="alpha")).text
    beta = (await servers.call(spec, "pid", {}, timeout=10, agent="beta")).text
    assert alpha != beta
    assert (await servers.call(spec, "pid", {}, timeout=10, agent="alpha")).text == alpha
    assert servers.is_running(spec, "alpha") and servers.is_running(spec, "beta")


async def test_a_servers_own_error_of_code_32000_is_its_answer_not_a_crash(
    servers: McpServers,
) -> None:
    """-32000 is also the code of the client's "connection closed": a server answering
    with it was taken as crashed, told so, and stopped (with the calls running on it)."""
    spec = stdio_spec()
    old = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    with pytest.raises(ToolFailed, match=r"^MCP server probe refused refuse: busy, try later$"):
        await servers.call(
            spec, "refuse", {"code": -32000, "message": "busy, try later"}, timeout=10
        )
    assert int((await servers.call(spec, "pid", {}, timeout=10)).text) == old


async def test_a_hang_times_out_and_the_server_is_replaced(servers: McpServers) -> None:
    spec = stdio_spec()
    old = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    with pytest.raises(ToolFailed, match=r"probe\.hang timed out after 0\.5s"):
        await servers.call(spec, "hang", {}, timeout=0.5)
    assert gone(old)  # the stuck process was stopped, not left behind
    new = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    assert new != old


async def test_a_server_that_died_between_calls_is_started_again(servers: McpServers) -> None:
    spec = stdio_spec()
    old = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    os.kill(old, signal.SIGKILL)
    await wait_until(lambda: not servers.is_running(spec))
    new = int((await servers.call(spec, "pid", {}, timeout=10)).text)
    assert new != old


async def test_closing_stops_every_server(errlog: TextIO) -> None:
    pool = McpServers(errlog=errlog)
    one = int((await pool.call(stdio_spec("one"), "pid", {}, timeout=10)).text)
    two = int((await pool.call(stdio_spec("two", env={"X": "1"}), "pid", {}, timeout=10)).text)
    assert one != two
    await pool.aclose()
    assert gone(one) and gone(two)
    with pytest.raises(ToolFailed, match="shutting down"):
        await pool.call(stdio_spec(), "pid", {}, timeout=10)


async def test_a_tool_the_server_gained_since_it_started_starts_it_again(
    servers: McpServers, tmp_path: Path
) -> None:
    """The server's code changed after the worker started it and a new agent version lists
    the new tool (`vigil agent apply --refresh`): the call starts the server again (before:
    the old process answered 'Unknown tool'); a tool it still lacks is named as missing."""
    listing = tmp_path / "tools.txt"
    listing.write_text("first\n")
    spec = McpServerSpec(name="listed", command=[sys.executable, str(LISTED), str(listing)])
    assert (await servers.call(spec, "first", {"text": "one"}, timeout=20)).text == "one"
    listing.write_text("first\nsecond\n")
    assert (await servers.call(spec, "second", {"text": "two"}, timeout=20)).text == "two"
    assert (await servers.call(spec, "first", {"text": "three"}, timeout=20)).text == "three"
    before = await servers.connection(spec)
    missing = r"has no tool 'third' \(it lists: first, second\)"
    with pytest.raises(ToolFailed, match=missing):
        await servers.call(spec, "third", {"text": "x"}, timeout=20)
    once = await servers.connection(spec)
    assert once is not before  # started again once for it
    with pytest.raises(ToolFailed, match=missing):
        await servers.call(spec, "third", {"text": "x"}, timeout=20)
    assert await servers.connection(spec) is once  # not again for the same tool


async def test_a_busy_server_lacking_a_new_tool_is_started_again_once_idle(
    servers: McpServers, tmp_path: Path
) -> None:
    """A call of a tool the server gained since it started, while another call runs on
    it: it was refused as missing (a restart would cut the running call). It now waits
    for the running call to end, then starts the server again."""
    listing = tmp_path / "tools.txt"
    listing.write_text("first\n")
    spec = McpServerSpec(name="busy", command=[sys.executable, str(LISTED), str(listing)])
    assert (await servers.call(spec, "first", {"text": "warm"}, timeout=20)).text == "warm"
    running = asyncio.create_task(servers.call(spec, "first", {"text": "sleep:2"}, timeout=20))
    conn = await servers.connection(spec)
    await until(lambda: conn.calls > 0, within=20, what="the long call running")
    listing.write_text("first\nsecond\n")
    gained = await servers.call(spec, "second", {"text": "after"}, timeout=20)
    assert gained.text == "after"
    assert running.done() and (await running).text == "sleep:2"  # not cut


async def test_a_server_slow_to_start_is_given_its_own_timeout(errlog: TextIO) -> None:
    """A server's ``timeout_seconds`` bounds its start and its listing too, when it is
    longer than the worker's start limit: a server that takes longer than that limit to
    start (a package fetched first) failed every call whatever the agent file said."""
    pool = McpServers(errlog=errlog, start_timeout=1.0)
    try:
        slow = {"env": {"PROBE_START_DELAY": "2.5"}}
        with pytest.raises(ToolFailed, match="did not start within 1s"):
            await pool.call(stdio_spec("impatient", **slow), "pid", {}, timeout=10)
        given = stdio_spec("patient", timeout_seconds=10, **slow)
        assert int((await pool.call(given, "pid", {}, timeout=10)).text) > 0
        assert [t.name for t in await pool.list_tools(given)]
    finally:
        await pool.aclose()


async def test_a_bare_python_command_runs_the_workers_own_python(
    servers: McpServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``command = ["python", "server.py"]`` (the examples' form) looked ``python`` up on
    the worker's PATH: a worker started as ``.venv/bin/vigil`` without its environment
    active found the system's Python (without the MCP package) or none at all, and every
    call failed. A bare ``python`` or ``python3`` now runs the worker's own interpreter."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no Python on it
    for name in ("python", "python3"):
        spec = stdio_spec(f"bare-{name}").model_copy(update={"command": [name, str(SERVER)]})
        assert int((await servers.call(spec, "pid", {}, timeout=20)).text) > 0


async def test_a_server_given_its_own_path_finds_python_there(
    servers: McpServers, tmp_path: Path
) -> None:
    """A server whose ``env`` sets PATH chose where its ``python`` comes from: that PATH
    is searched, as before."""
    spec = stdio_spec("own-path", env={"PATH": str(tmp_path)})
    spec = spec.model_copy(update={"command": ["python", str(SERVER)]})
    with pytest.raises(ToolFailed, match="could not start: FileNotFoundError"):
        await servers.call(spec, "pid", {}, timeout=20)


async def test_a_listing_that_is_not_what_mcp_says_is_a_server_error() -> None:
    """A server listing ``{"tools": "nope"}``: `vigil agent apply` printed pydantic's
    traceback, and the API blamed the request's own body."""
    malformed = LISTED.parent / "malformed_server.py"
    spec = McpServerSpec(name="bad", command=[sys.executable, str(malformed)])
    with pytest.raises(McpServerError) as caught:
        await list_mcp_tools(spec)
    assert str(caught.value) == (
        "MCP server bad: listing tools failed: its listing is not what MCP says: "
        "tools: Input should be a valid list"
    )


async def test_an_idle_server_is_stopped_and_started_again_on_its_next_call(
    errlog: TextIO,
) -> None:
    pool = McpServers(errlog=errlog, idle_seconds=0.5)
    try:
        spec = stdio_spec()
        old = int((await pool.call(spec, "pid", {}, timeout=10, agent="alpha")).text)
        await wait_until(lambda: gone(old))  # no call for its idle time: stopped
        assert not pool.is_running(spec, "alpha")
        new = int((await pool.call(spec, "pid", {}, timeout=10, agent="alpha")).text)
        assert new != old and not gone(new)
    finally:
        await pool.aclose()


async def test_past_the_most_servers_the_least_recently_used_idle_one_stops(
    errlog: TextIO,
) -> None:
    pool = McpServers(errlog=errlog, max_servers=2)
    try:
        spec = stdio_spec()

        async def pid(agent: str) -> int:
            return int((await pool.call(spec, "pid", {}, timeout=10, agent=agent)).text)

        alpha, beta = await pid("alpha"), await pid("beta")
        assert await pid("alpha") == alpha  # used last: beta is the least recent
        gamma = await pid("gamma")
        await wait_until(lambda: gone(beta))
        assert not gone(alpha) and not gone(gamma)
        # Servers with a call running are never stopped for another: the cap is passed.
        hanging = [
            asyncio.create_task(pool.call(spec, "hang", {}, timeout=4, agent=agent))
            for agent in ("alpha", "gamma")
        ]
        await asyncio.sleep(0.5)
        delta = await pid("delta")
        assert not gone(alpha) and not gone(gamma) and not gone(delta)
        assert all(pool.is_running(spec, a) for a in ("alpha", "gamma", "delta"))
        for call in hanging:
            with pytest.raises(ToolFailed, match="timed out"):
                await call
    finally:
        await pool.aclose()


async def test_a_crash_quotes_only_what_the_server_wrote_during_that_call(
    servers: McpServers,
) -> None:
    """One agent's server serves its sessions one after the other: a crash quoted the
    stderr tail, which held what the server logged for an earlier session's call."""
    spec = stdio_spec()
    assert (await servers.call(spec, "log", {"text": "card 4111 of customer A"}, timeout=10)).text
    with pytest.raises(ToolFailed) as crashed:
        await servers.call(spec, "crash", {}, timeout=10)
    assert "customer A" not in str(crashed.value)
    assert "wrote nothing to stderr during the call" in str(crashed.value)
    with pytest.raises(ToolFailed) as told:
        await servers.call(spec, "crash", {"last_words": "out of memory"}, timeout=10)
    assert "out of memory" in str(told.value)
