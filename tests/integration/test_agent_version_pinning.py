"""A session pins the agent version it started with: a new version applied while it runs
(across continue-as-new too) never changes it; only a redirect naming a version moves it,
and the record says so."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.locks import waiting_for_lock
from tests.support.sessions import (
    approval_pending,
    events,
    eventually,
    raw_json,
    running_worker,
    session_input,
    start,
    stub_settings,
    until,
    wait_status,
)
from vigil.activities.record import agents as agent_rows
from vigil.schema import names
from vigil.schema.agents import AgentSpec
from vigil.schema.payloads import (
    ApproveInput,
    RedirectInput,
    SessionResult,
    SessionState,
    SessionStatus,
)
from vigil.workers.agents import AgentService
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def spec(name: str, prompt: str, tools: list[str]) -> AgentSpec:
    return AgentSpec.model_validate(
        {
            "name": name,
            "system_prompt": prompt,
            "tools": [{"name": "http_fetch", "approval": "always"}] + [{"name": t} for t in tools],
        }
    )


def offered(body: dict[str, object]) -> list[str]:
    return [t["function"]["name"] for t in body["tools"]]  # type: ignore[attr-defined, index]


async def test_new_version_does_not_reach_a_running_session(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    name = f"pinned-{uuid.uuid4().hex[:8]}"
    agents = AgentService(sessionmaker)
    await agents.apply_spec(spec(name, "first edition: {goal}", ["read_artifact"]))
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/one"}),
        Reply.tool_call("read_artifact", {"name": "nothing"}),
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/two"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        # One step per run: every run resolves the agent again.
        handle = await start(
            client, task_queue, session_input("pin me", agent_id=name, steps_per_run=1)
        )
        await approval_pending(handle, sessionmaker, "a1-0")
        applied = await agents.apply_spec(spec(name, "second edition: {goal}", ["recall"]))
        assert applied.version == 2
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ops"))
        await approval_pending(handle, sessionmaker, "a3-0")
        state = await eventually(handle, lambda s: s.agent_version == 1)
        assert state.run_index == 3
        model_requests = [r.body for r in stub.requests if r.path.endswith("/completions")]
        assert len(model_requests) == 3
        for body in model_requests:
            assert offered(body) == ["http_fetch", "read_artifact", "finish"]
            assert body["messages"][0]["content"] == "first edition: pin me"

        # Only an explicit redirect moves it, to the version it names.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                names.UPD_REDIRECT, RedirectInput(goal="x", by="ops", agent_version=0)
            )
        vigil = VigilClient(settings, client)
        try:  # as `vigil redirect --agent-version 2`, which said only the goal changed
            # The version it runs: no move is said (one was, whatever the version).
            same = await vigil.redirect(
                handle.id, "pin me, second edition", by="ops", agent_version=1
            )
            assert same is not None and same.message.endswith("; it keeps agent version 1")
            ack = await vigil.redirect(
                handle.id, "pin me, second edition", by="ops", agent_version=2
            )
        finally:
            await vigil.close()
        assert ack is not None and ack.message.endswith("; agent version 2 from its next step")
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a3-0", by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    last = [r.body for r in stub.requests if r.path.endswith("/completions")][-1]
    assert offered(last) == ["http_fetch", "recall", "finish"]
    assert last["messages"][0]["content"] == "second edition: pin me, second edition"
    (moved,) = await events(sessionmaker, handle.id, "agent_version_changed")
    assert (moved.actor, moved.payload["from"], moved.payload["to"]) == ("ops", 1, 2)
    async with sessionmaker() as db:
        assert await agent_rows.session_agent_version(db, handle.id) == 2


class HeldOnV1:
    """A session of a new agent's version 1 held at its first step's approval (a fetch),
    on a worker of its own: ``async with held.running()`` gives its handle; at the end
    of the block the approval is given, and ``final`` is its state once completed."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        sessionmaker: async_sessionmaker[DbSession],
        task_queue: str,
        stub: LLMStub,
    ) -> None:
        self.client, self.settings, self.sessionmaker = client, settings, sessionmaker
        self.task_queue, self.stub = task_queue, stub
        self.final: SessionState | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[WorkflowHandle[Any, Any]]:
        name = f"steady-{uuid.uuid4().hex[:8]}"
        await AgentService(self.sessionmaker).apply_spec(spec(name, "v1 {goal}", []))
        self.stub.enqueue(
            Reply.tool_call("http_fetch", {"url": f"{self.stub.url}/x"}),
            Reply.tool_call("finish", {"summary": "kept v1"}),
        )
        cfg = stub_settings(self.settings, self.stub.url_openai, http_allow=self.stub.host_port)
        async with running_worker(self.client, cfg, self.task_queue):
            handle = await start(
                self.client, self.task_queue, session_input("hold on", agent_id=name)
            )
            await approval_pending(handle, self.sessionmaker)
            yield handle
            approve = ApproveInput(approval_id="a1-0", by="o")
            await handle.execute_update(names.UPD_APPROVE, approve)
            self.final = await wait_status(handle, SessionStatus.COMPLETED)


@pytest.fixture
def held(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> HeldOnV1:
    return HeldOnV1(client, settings, sessionmaker, task_queue, stub)


async def test_redirect_to_a_missing_version_keeps_the_pinned_one(
    held: HeldOnV1, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    async with held.running() as handle:
        await handle.execute_update(
            names.UPD_REDIRECT, RedirectInput(goal="hold on", by="ops", agent_version=9)
        )
    assert held.final is not None and held.final.agent_version == 1
    (refused,) = await events(sessionmaker, handle.id, "agent_version_refused")
    assert "has no version 9" in (refused.reason or "")


@pytest.mark.parametrize("version", [2**31, 2**63, 10**22])
async def test_redirect_signal_to_an_out_of_range_version_keeps_the_pinned_one(
    held: HeldOnV1, sessionmaker: async_sessionmaker[DbSession], version: int
) -> None:
    """A redirect signal naming a version no definition can have (past the record's
    integer) is refused as a missing version is, and the session goes on (before: its
    version's read failed on the database's range and was retried for ever)."""
    async with held.running() as handle:
        # As `temporal workflow signal --input` sends it: the number exactly as written.
        await handle.signal(
            names.SIG_REDIRECT,
            raw_json(f'{{"goal": "hold on", "by": "ops", "agent_version": {version}}}'),
        )
        await until(
            lambda: events(sessionmaker, handle.id, "session_redirected"), what="redirect taken"
        )
    final = held.final
    assert final is not None and final.agent_version == 1
    assert final.rejected_inputs == 0
    (refused,) = await events(sessionmaker, handle.id, "agent_version_refused")
    assert f"has no version {version}" in (refused.reason or "")
    assert (refused.actor, refused.payload["version"], refused.payload["kept"]) == (
        "ops",
        version,
        1,
    )
    async with sessionmaker() as db:
        assert await agent_rows.session_agent_version(db, handle.id) == 1


async def test_redirect_update_to_an_out_of_range_version_is_refused(
    held: HeldOnV1, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """The update's validator refuses a version no definition can have, as the API and
    the CLI do (before: accepted, and the session's version read retried for ever)."""
    async with held.running() as handle:
        for version in (2**31, 10**22):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(
                    names.UPD_REDIRECT,
                    raw_json(f'{{"goal": "elsewhere", "by": "ops", "agent_version": {version}}}'),
                )
            assert "versions are 1 to 2147483647" in str(refused.value.cause)
    final = held.final
    assert final is not None and (final.agent_version, final.goal) == (1, "hold on")
    assert await events(sessionmaker, handle.id, "session_redirected") == []
    assert await events(sessionmaker, handle.id, "agent_version_refused") == []


async def test_the_last_redirect_holds_when_it_names_the_running_version(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    """Two redirects before the session's next step: to version 2, then back to the
    version it runs (1). The session stays on 1, as the last one said."""
    name = f"pinned-{uuid.uuid4().hex[:8]}"
    agents = AgentService(sessionmaker)
    await agents.apply_spec(spec(name, "first edition: {goal}", ["read_artifact"]))
    await agents.apply_spec(spec(name, "second edition: {goal}", ["recall"]))
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/one"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(
            client, task_queue, session_input("stay", agent_id=name, agent_version=1)
        )
        await approval_pending(handle, sessionmaker, "a1-0")
        for version in (2, 1):
            await handle.execute_update(
                names.UPD_REDIRECT,
                RedirectInput(goal=f"stay, take {version}", by="ops", agent_version=version),
            )
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    last = [r.body for r in stub.requests if r.path.endswith("/completions")][-1]
    assert offered(last) == ["http_fetch", "read_artifact", "finish"]
    assert last["messages"][0]["content"].startswith("first edition:")
    assert await events(sessionmaker, handle.id, "agent_version_changed") == []
    async with sessionmaker() as db:
        assert await agent_rows.session_agent_version(db, handle.id) == 1


async def _redirected_while_the_move_is_read(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
    goal: str,
    then: RedirectInput,
) -> tuple[WorkflowHandle[Any, Any], SessionResult]:
    """A session of version 1 (of two editions) waiting for approval, redirected to
    version 2; once approved, while the session reads version 2 (held by a lock on the
    versions' table), redirected again with ``then``; its handle and result."""
    name = f"pinned-{uuid.uuid4().hex[:8]}"
    agents = AgentService(sessionmaker)
    await agents.apply_spec(spec(name, "first edition: {goal}", ["read_artifact"]))
    await agents.apply_spec(spec(name, "second edition: {goal}", ["recall"]))
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/one"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(
            client, task_queue, session_input(goal, agent_id=name, agent_version=1)
        )
        await approval_pending(handle, sessionmaker, "a1-0")
        await handle.execute_update(
            names.UPD_REDIRECT, RedirectInput(goal="move", by="ops", agent_version=2)
        )
        locker = await asyncpg.connect(database_url)
        try:
            held = locker.transaction()
            await held.start()
            # Version 2's read waits on this lock: the move is under way.
            await locker.execute("LOCK TABLE agent_versions IN ACCESS EXCLUSIVE MODE")
            await handle.execute_update(
                names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ops")
            )
            await until(
                lambda: waiting_for_lock(database_url, "%agent_versions%"),
                within=30,
                what="version 2 read",
            )
            await handle.execute_update(names.UPD_REDIRECT, then)
            await held.rollback()
        finally:
            await locker.close()
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    return handle, result


async def test_a_redirect_back_while_the_move_is_being_read_holds(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    """A redirect to version 2, then, while the session reads version 2 to move to it,
    one back to the version it ran (1): the last redirect holds, and the session's next
    step runs version 1 again (before: the second redirect named the version the session
    still ran, was taken as no move, and the session went on with version 2). The record
    says both moves."""
    back = RedirectInput(goal="stay", by="ana", agent_version=1)
    handle, _ = await _redirected_while_the_move_is_read(
        client, settings, task_queue, stub, sessionmaker, database_url, "stay", back
    )
    last = [r.body for r in stub.requests if r.path.endswith("/completions")][-1]
    assert last["messages"][0]["content"].startswith("first edition:")
    assert offered(last) == ["http_fetch", "read_artifact", "finish"]
    moves = await events(sessionmaker, handle.id, "agent_version_changed")
    assert [(e.payload["from"], e.payload["to"], e.actor) for e in moves] == [
        (1, 2, "ops"),
        (2, 1, "ana"),
    ]
    async with sessionmaker() as db:
        assert await agent_rows.session_agent_version(db, handle.id) == 1


async def test_a_redirect_that_wakes_the_session_says_the_move_it_asked(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    """A redirect to version 2 of a session on version 1 waiting on `ask_human` answers the
    question, so the session steps on at once and moves: the client read the version after
    the redirect and said "it keeps agent version 2", a move that never happened."""
    name = f"pinned-{uuid.uuid4().hex[:8]}"
    agents = AgentService(sessionmaker)
    await agents.apply_spec(spec(name, "first edition: {goal}", ["ask_human"]))
    stub.enqueue(
        Reply.tool_call("ask_human", {"question": "which channel?"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("ask me", agent_id=name))
        await wait_status(handle, SessionStatus.WAITING_HUMAN)
        assert (await agents.apply_spec(spec(name, "second: {goal}", ["ask_human"]))).version == 2
        vigil = VigilClient(settings, client)
        try:
            ack = await vigil.redirect(handle.id, "a new goal", by="ops", agent_version=2)
        finally:
            await vigil.close()
        assert ack is not None and ack.message.endswith("; agent version 2 from its next step")
        assert (await handle.result()).status == SessionStatus.COMPLETED
    (moved,) = await events(sessionmaker, handle.id, "agent_version_changed")
    assert (moved.payload["from"], moved.payload["to"]) == (1, 2)
    # The question was answered by the redirect (the README says so).
    (asked,) = [r for r in stub.requests if r.path.endswith("/completions")][1:2]
    tool_result = asked.body["messages"][-1]
    assert tool_result["content"] == "ops replied: New goal from ops: a new goal", tool_result


@pytest.mark.parametrize("steps_per_run", [200, 1])
async def test_a_plain_redirect_fills_the_prompts_goal(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    steps_per_run: int,
) -> None:
    """A redirect without a version left the start's goal in the system prompt (``Goal:
    {goal}``) until the next run, while a redirect with one filled in the new goal: the
    model was sent two goals. Every redirect's goal fills it."""
    name = f"prompted-{uuid.uuid4().hex[:8]}"
    await AgentService(sessionmaker).apply_spec(
        spec(name, "You are {agent}. Goal: {goal}. Again: {goal}.", [])
    )
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/one"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(
            client,
            task_queue,
            session_input("the first", agent_id=name, steps_per_run=steps_per_run),
        )
        await approval_pending(handle, sessionmaker, "a1-0")
        await handle.execute_update(names.UPD_REDIRECT, RedirectInput(goal="the second", by="ops"))
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    prompts = [
        r.body["messages"][0]["content"] for r in stub.requests if r.path.endswith("/completions")
    ]
    assert prompts == [
        f"You are {name}. Goal: the first. Again: the first.",
        f"You are {name}. Goal: the second. Again: the second.",
    ]


async def test_a_plain_redirect_while_a_move_is_read_fills_the_moved_prompt(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    """A redirect to version 2, then, while the session reads version 2 to move to it, a
    redirect of the goal alone: version 2's prompt was filled with the goal of the first
    redirect (read with the move), and the model worked under the superseded goal. The
    moved prompt holds the last goal."""
    plain = RedirectInput(goal="the third", by="ana")
    await _redirected_while_the_move_is_read(
        client, settings, task_queue, stub, sessionmaker, database_url, "the first", plain
    )
    last = [r.body for r in stub.requests if r.path.endswith("/completions")][-1]
    assert last["messages"][0]["content"] == "second edition: the third"
