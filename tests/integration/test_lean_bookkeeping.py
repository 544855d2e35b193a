"""Lean and local bookkeeping (``PATCH_LEAN_BOOKKEEPING``, ``PATCH_LOCAL_BOOKKEEPING``): a
session's start and end cost fewer activities and history events, and the record holds
exactly what it held before.

The agent's definition is read by a local activity, the session is opened by the first
activity that writes its records (the first model call, or the record written before a
wait), and the outcome's memory is written by the last record; the records, and the
outcome's memory when it cannot ride with them, are local activities in every mode. A new
session asks for one patch only: every older patch is implied.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import ActivityEnvironment

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    events,
    local_agent,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    transcript,
    until,
)
from vigil.activities.agents.runtime import AgentActivities, AgentVersions
from vigil.activities.hooks.delivery import WebhookTargets
from vigil.schema import event_kinds, names
from vigil.schema.agents import ResolveAgentInput
from vigil.schema.payloads import PauseInput, ResumeInput, SessionStatus
from vigil.workers.client import VigilClient, local_activity_data
from vigil.workers.hooks import WebhookService
from vigil.workers.settings import Settings
from vigil.workflows.session import AgentSession

pytestmark = pytest.mark.integration


def _kinds(history: list[HistoryEvent]) -> Counter[str]:
    return Counter(e.WhichOneof("attributes").removesuffix("_event_attributes") for e in history)


def _scheduled(history: list[HistoryEvent]) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


def _local(history: list[HistoryEvent]) -> list[tuple[int, str, int]]:
    """(event id, activity type, attempt) of each local activity's marker."""
    return [
        (e.event_id, data["activity_type"], data["attempt"])
        for e in history
        if (data := local_activity_data(e)) is not None
    ]


def _patches(history: list[HistoryEvent]) -> list[str]:
    """The patch ids the history's markers carry."""
    found = []
    for e in history:
        if e.HasField("marker_recorded_event_attributes"):
            marker = e.marker_recorded_event_attributes
            if marker.marker_name == "core_patch":
                found.append(json.loads(marker.details["patch-data"].payloads[0].data)["id"])
    return found


def _upserted(event: HistoryEvent) -> bytes:
    """The values a search attribute upsert sets, as stored (empty for other events)."""
    if not event.HasField("upsert_workflow_search_attributes_event_attributes"):
        return b""
    upsert = event.upsert_workflow_search_attributes_event_attributes
    return b"".join(p.data for p in upsert.search_attributes.indexed_fields.values())


async def _history(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


async def _memories(sessionmaker: async_sessionmaker[DbSession], sid: str) -> list[str]:
    async with sessionmaker() as db:
        rows = await db.execute(
            text("SELECT kind FROM memories WHERE source_session_id = :s"), {"s": sid}
        )
        return [r.kind for r in rows]


async def _assert_opened_and_ended_once(
    sessionmaker: async_sessionmaker[DbSession], sid: str, goal: str
) -> None:
    messages = await transcript(sessionmaker, sid)
    assert_whole(messages)
    assert (messages[0].seq, messages[0].role, messages[0].content) == (0, "user", goal)
    kinds = Counter(e.kind for e in await events(sessionmaker, sid))
    assert kinds[event_kinds.SESSION_OPENED] == 1
    assert kinds[event_kinds.SESSION_ENDED] == 1
    assert (await session_row(sessionmaker, sid)).status == "completed"


@pytest.mark.parametrize("local", [False, True], ids=["default", "low-latency"])
async def test_a_one_step_session_asks_the_server_for_its_model_call_only(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    local: bool,
) -> None:
    agent = await local_agent(sessionmaker, [{"name": "finish"}]) if local else "agent-test"
    stub.enqueue(Reply.tool_call("finish", {"summary": "all done"}))
    goal = "say when the tide turns"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client, task_queue, session_input(goal, agent_id=agent), f"lean-{uuid.uuid4()}"
        )
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED and result.steps == 1

    history = await _history(handle)
    # Opening the session rode with the model call, remembering the outcome with the last
    # record; the agent's definition and the last record were local activities. The
    # low-latency mode has its model call local too: the session is one workflow task.
    assert _scheduled(history) == ([] if local else [names.ACT_CALL_MODEL])
    expected = [names.ACT_RESOLVE_AGENT, *([names.ACT_CALL_MODEL] if local else [])]
    assert [name for _, name, _ in _local(history)] == [*expected, names.ACT_RECORD]
    # One patch, asked first; the older ones, and step batches in either mode, it implies.
    assert _patches(history) == [names.PATCH_DEFAULT_STEP_BATCHES]
    kinds = _kinds(history)
    # The patch, the locals.
    assert kinds["marker_recorded"] == 1 + (3 if local else 2)
    assert kinds["workflow_task_completed"] == (1 if local else 2)
    # The patch's TemporalChangeVersion, the start (this start set none) and the end: the
    # step, less than a second after the start, updated no search attribute of its own
    # (quiet steps).
    assert kinds["upsert_workflow_search_attributes"] == 3

    await _assert_opened_and_ended_once(sessionmaker, handle.id, goal)
    assert await _memories(sessionmaker, handle.id) == ["reflection"]


async def test_a_session_paused_before_its_first_step_is_in_the_record_while_it_waits(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """No model call opens it: the record written before the pause's wait does."""
    stub.enqueue(Reply.tool_call("finish", {"summary": "done after the pause"}))
    goal = "wait for the all clear"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await client.start_workflow(
            AgentSession.run,
            session_input(goal),
            id=f"lean-paused-{uuid.uuid4()}",
            task_queue=task_queue,
            start_signal=names.SIG_PAUSE,
            start_signal_args=[PauseInput(by="ops", reason="not yet")],
        )

        async def paused_row() -> Any:
            async with sessionmaker() as db:
                row = await db.execute(
                    text("SELECT status FROM sessions WHERE id = :s"), {"s": handle.id}
                )
                status = row.scalar()
            return status == "paused" or None

        await until(paused_row, what="the paused session in the record")
        assert not stub.requests  # nothing asked of the model while paused
        messages = await transcript(sessionmaker, handle.id)
        assert [(m.seq, m.role, m.content) for m in messages] == [(0, "user", goal)]
        await handle.signal(names.SIG_RESUME, ResumeInput(by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    await _assert_opened_and_ended_once(sessionmaker, handle.id, goal)


@pytest.fixture
async def failing_memory_writes(
    sessionmaker: async_sessionmaker[DbSession],
) -> AsyncIterator[tuple[str, int]]:
    """An agent whose first two memory writes fail (a trigger counting on a sequence, which
    no rollback resets); yields (agent, failures)."""
    agent = f"agent-flaky-memory-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    seq, fn, trigger = f"flaky_seq_{tag}", f"flaky_fn_{tag}", f"flaky_trg_{tag}"
    async with sessionmaker.begin() as db:
        await db.execute(text(f"CREATE SEQUENCE {seq}"))
        await db.execute(
            text(
                f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.agent_id = '{agent}' AND nextval('{seq}') <= 2 THEN "
                "RAISE EXCEPTION 'planted: the memory write fails'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        await db.execute(text(f"GRANT USAGE ON SEQUENCE {seq} TO PUBLIC"))
        await db.execute(
            text(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON memories "
                f"FOR EACH ROW EXECUTE FUNCTION {fn}()"
            )
        )
    try:
        yield agent, 2
    finally:
        async with sessionmaker.begin() as db:
            await db.execute(text(f"DROP TRIGGER IF EXISTS {trigger} ON memories"))
            await db.execute(text(f"DROP FUNCTION IF EXISTS {fn}()"))
            await db.execute(text(f"DROP SEQUENCE IF EXISTS {seq}"))


async def test_a_failing_memory_write_is_remembered_separately_after_the_ending(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    failing_memory_writes: tuple[str, int],
) -> None:
    """The try riding with the last record fails: the record stands (not retried), the
    ending is published, and a remember activity of its own (local, as the record is)
    retries the memory."""
    agent, failures = failing_memory_writes
    stub.enqueue(Reply.tool_call("finish", {"summary": "the tide turns at noon"}))
    goal = "find when the tide turns"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client, task_queue, session_input(goal, agent_id=agent), f"lean-flaky-{uuid.uuid4()}"
        )
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    history = await _history(handle)
    assert _scheduled(history) == [names.ACT_CALL_MODEL]
    local = _local(history)
    # The record once (its try of the memory was the first planted failure); the
    # memory's own activity after the others.
    assert [(name, attempt) for _, name, attempt in local] == [
        (names.ACT_RESOLVE_AGENT, 1),
        (names.ACT_RECORD, 1),
        (names.ACT_REMEMBER, failures),
    ]
    ended = [e.event_id for e in history if b'"completed"' in _upserted(e)]
    assert ended and ended[0] < local[-1][0]  # the ending published first
    await _assert_opened_and_ended_once(sessionmaker, handle.id, goal)
    assert await _memories(sessionmaker, handle.id) == ["reflection"]


async def test_a_local_model_call_refused_for_good_ends_the_session_with_its_record(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A local activity's failure reaches the workflow as the activity's own error, not
    wrapped as a regular activity's is: the session still fails as it would in the default
    mode, its ending recorded."""
    agent = await local_agent(sessionmaker, [{"name": "finish"}])
    stub.enqueue(Reply.status(400, message="max_tokens is too large"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client,
            task_queue,
            session_input("ask too much", agent_id=agent),
            f"lean-refused-{uuid.uuid4()}",
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "session failed" in str(failed.value.cause)
    assert (await session_row(sessionmaker, handle.id)).status == "failed"
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert "max_tokens is too large" in messages[-1].content
    kinds = Counter(e.kind for e in await events(sessionmaker, handle.id))
    assert kinds[event_kinds.SESSION_ENDED] == 1


async def test_a_session_vigils_client_starts_runs_the_definition_the_start_carries(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """vigil's client resolves the agent's definition from the read it makes anyway and
    the start carries it: the first run reads nothing (no ``vigil.resolve_agent``) and
    runs what the session would have read, system prompt, tools and webhook events
    included. A start that carries another version's resolves its own."""
    agent = await local_agent(
        sessionmaker, [{"name": "finish"}], system_prompt="be brief about {goal}"
    )
    await WebhookService(sessionmaker).add(
        agent, "http://127.0.0.1:9/hook", ["approval_requested"], "env:NO_SUCH_SECRET"
    )
    vigil = await VigilClient.connect(settings)
    try:
        found = await vigil.require_agent(agent)
        carried = await vigil.resolved_runtime(agent, "the tide", found)
        versions = AgentVersions(sessionmaker)
        read = await ActivityEnvironment().run(
            AgentActivities(versions, WebhookTargets(sessionmaker, versions).events).resolve_agent,
            ResolveAgentInput(session_id="s", agent_id=agent, goal="the tide"),
        )
        assert carried == read.model_dump(mode="json")
        assert carried["webhook_events"] == ["approval_requested"]

        stub.enqueue(Reply.tool_call("finish", {"summary": "at noon"}))
        async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
            started = await vigil.start_session(agent, "the tide", task_queue=task_queue)
            handle = client.get_workflow_handle_for(AgentSession.run, started.id)
            result = await handle.result()
            assert result.status == SessionStatus.COMPLETED and result.steps == 1
            history = await _history(handle)
            assert [name for _, name, _ in _local(history)] == [
                names.ACT_CALL_MODEL,
                names.ACT_RECORD,
            ]
            system = stub.requests[-1].body["messages"][0]
            assert system == {"role": "system", "content": "be brief about the tide"}
            await _assert_opened_and_ended_once(sessionmaker, started.id, "the tide")
            # The start set the search attributes the session would set first: it sets
            # none of them again (the one update before the end is the patch's version).
            upserts = [e for e in history if _upserted(e)]
            assert len(upserts) == 2
            assert b"VigilGoal" not in b"".join(
                e.upsert_workflow_search_attributes_event_attributes.SerializeToString()
                for e in upserts
            )
            shown = (await handle.describe()).typed_search_attributes
            assert (shown.get(names.SA_STATUS), shown.get(names.SA_STEP)) == ("completed", 1)
            assert (shown.get(names.SA_AGENT), shown.get(names.SA_GOAL)) == (agent, "the tide")

            # Carried for another version than the start names: read as before.
            stub.enqueue(Reply.tool_call("finish", {"summary": "at noon"}))
            other = session_input("the tide", agent_id=agent, agent_version=1)
            other.runtime = {**carried, "version": 2}
            handle = await start(client, task_queue, other, f"lean-other-{uuid.uuid4()}")
            assert (await handle.result()).status == SessionStatus.COMPLETED
            local = [name for _, name, _ in _local(await _history(handle))]
            assert local[0] == names.ACT_RESOLVE_AGENT
    finally:
        await vigil.close()
