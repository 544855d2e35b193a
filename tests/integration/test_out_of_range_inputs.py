"""Numbers past what the API takes are bad input through every face: a one-line error and
exit 2 from `vigil`, :class:`BadArgument` from the Python client, as the API's 422.

Before, a memory search of more than 500 memories, a memory id past a bigint, an agent
version past the record's integer, or more recent messages than a bigint reached
PostgreSQL and came back as a traceback (exit 1) or a raw database error.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, one_error_line
from tests.support.llm_stub import Reply
from vigil.schema.payloads import StartSessionInput
from vigil.workers.agents import AgentError, AgentService
from vigil.workers.client import BadArgument, VigilClient

pytestmark = pytest.mark.integration

HUGE = 10**20
"""Past a bigint (and so past every integer column of the record)."""


@pytest.fixture
async def client(cli: CLIStack) -> AsyncIterator[VigilClient]:
    vigil = await VigilClient.connect(cli.settings)
    try:
        yield vigil
    finally:
        await vigil.close()


def _define(cli: CLIStack, folder: Path) -> str:
    name = f"range-{uuid.uuid4().hex[:8]}"
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nbudget:\n  max_steps: 3\n")
    cli.vigil.ok("agent", "apply", str(path))
    return name


def _ended_session(cli: CLIStack, agent: str) -> str:
    goal = cli.plan(Reply.tool_call("finish", {"summary": "done"}))
    end = cli.vigil.json("start", goal, "--agent", agent, "--wait", timeout=120)
    assert end["status"] == "completed", end
    return str(end["id"])


def test_the_cli_refuses_out_of_range_numbers_in_one_line(cli: CLIStack, tmp_path: Path) -> None:
    agent = _define(cli, tmp_path)
    cli.vigil.ok("memory", "add", "the disk of db-1 fills up on Mondays", "--agent", agent)
    session = _ended_session(cli, agent)
    h = str(HUGE)
    calls: dict[tuple[str, ...], str] = {
        ("memory", "search", "disk", "--agent", agent, "-k", "501"): "501",
        ("memory", "search", "disk", "--agent", agent, "-k", "101"): "101",
        ("memory", "search", "disk", "--agent", agent, "-k", h): h,
        ("memory", "forget", h, "--agent", agent): h,
        ("memory", "forget", str(2**63), "--agent", agent): str(2**63),
        ("agent", "show", agent, "--version", h): h,
        ("agent", "show", agent, "--version", str(2**31)): str(2**31),
        ("agent", "diff", agent, "1", h): h,
        ("agent", "diff", agent, "0", "1"): "0",
        ("show", session, "--last", h): h,
        ("show", session, "--last", "501"): "501",
        ("redirect", session, "another goal", "--agent-version", h): h,
        ("start", "x", "--agent", agent, "--agent-version", h): h,
        (
            "schedule", "create", f"hv-{uuid.uuid4().hex[:6]}", "--goal", "x",
            "--agent", agent, "--every", "1h", "--agent-version", h,
        ): h,
    }  # fmt: skip
    for args, done in zip(calls, cli.vigil.many(*calls), strict=True):
        assert done.returncode == 2, explain(done)
        line = one_error_line(done)
        assert calls[args] in line and "out of range" in line, (args, line)
    # The bounds themselves are taken.
    assert cli.vigil.json("memory", "search", "disk", "--agent", agent, "-k", "100")
    assert cli.vigil.json("agent", "show", agent, "--version", "1")["version"] == 1
    assert len(cli.vigil.json("show", session, "--last", "500")["messages"]) >= 1


async def test_the_client_refuses_out_of_range_numbers(
    cli: CLIStack, client: VigilClient, tmp_path: Path
) -> None:
    agent = _define(cli, tmp_path)
    await client.memory_add(agent, "the disk of db-1 fills up on Mondays")
    session = _ended_session(cli, agent)
    template = StartSessionInput(agent_id=agent, goal="x", agent_version=HUGE)
    refused: dict[str, Callable[[], Awaitable[object]]] = {
        "memory_search k": lambda: client.memory_search(agent, "disk", k=10**9),
        "memory_search k=0": lambda: client.memory_search(agent, "disk", k=0),
        "memory_forget": lambda: client.memory_forget(agent, 2**70, by="ana"),
        "memory_forget 0": lambda: client.memory_forget(agent, 0, by="ana"),
        "start_session": lambda: client.start_session(agent, "x", agent_version=HUGE),
        "start_session 2**31": lambda: client.start_session(agent, "x", agent_version=2**31),
        "redirect": lambda: client.redirect(session, "y", by="ana", agent_version=HUGE),
        "session_view": lambda: client.session_view(session, HUGE),
        "session_view -1": lambda: client.session_view(session, -1),
        "create_schedule": lambda: client.create_schedule(
            f"hv-{uuid.uuid4().hex[:6]}", template, cron="0 2 * * *"
        ),
    }
    for what, call in refused.items():
        with pytest.raises(BadArgument, match="out of range") as info:
            await call()
        assert info.value.exit_code == 2, what
    assert await client.memory_search(agent, "disk", k=100)
    assert len((await client.session_view(session, 500)).messages) >= 1


async def test_the_agent_service_refuses_versions_no_definition_can_have(
    cli: CLIStack, client: VigilClient, tmp_path: Path
) -> None:
    agent = _define(cli, tmp_path)
    service = AgentService(client.db)
    for version in (HUGE, 2**31, 0, -1):
        with pytest.raises(AgentError, match="out of range") as info:
            await service.show(agent, version)
        assert info.value.exit_code == 2, version
    with pytest.raises(AgentError, match="out of range"):
        await service.diff(agent, 1, HUGE)
    assert (await service.show(agent, 1)).version == 1


async def test_a_memory_longer_than_any_face_takes_is_refused_by_every_writer(
    client: VigilClient,
) -> None:
    """The API took 32,768 characters of memory and the CLI and the client any length (a
    2 MB memory was stored, embedded and then recalled into prompts): the store holds the
    one limit now, so every writer refuses past it."""
    agent = f"mem-long-{uuid.uuid4().hex[:6]}"
    with pytest.raises(BadArgument, match="exceeds the limit of 32768"):
        await client.memory_add(agent, "x" * 40_000)
    with pytest.raises(BadArgument, match="subject exceeds the limit of 1000"):
        await client.memory_add(agent, "fine", subject="s" * 1001)
    assert (await client.memory_add(agent, "y" * 32_768)).action == "inserted"
