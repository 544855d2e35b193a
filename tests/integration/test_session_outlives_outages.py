"""An outage of PostgreSQL or the object store never ends a session.

The same holds in the low-latency mode, where the model call and the records are local
activities: Temporal carries no heartbeat between a local activity's attempts, so the
worker keeps their outage ledger itself.

The sessions here allow a model or tool call two attempts only, then take a part of the
test stack away while a call is under way and keep it away until the call has failed
more times than that. Outage failures are not the call's own failures: the session waits
the outage out, finishes normally with a whole transcript, and records (and logs) an
``infrastructure_recovered`` event for each activity that rode one out. The budget still
holds for the provider's own failures.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from tests.support.history import activity_runs
from tests.support.llm_stub import LLMStub, Reply
from tests.support.outage import PartOutage
from tests.support.sessions import (
    assert_whole,
    events,
    local_agent,
    running_worker,
    session_input,
    start,
    stub_settings,
    tool_messages,
    transcript,
    until,
)
from vigil.activities.artifacts.s3 import S3Store
from vigil.schema import names
from vigil.schema.payloads import SessionResult, SessionStatus, ToolPolicy
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

# Stops a part of the shared test stack: runs alone, after the parallel phase.
pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

BUDGET = 2
OUTLAST = BUDGET + 2
"""The outage lasts until a call has failed this many times."""
TIGHT = ToolPolicy(model_max_attempts=BUDGET, tool_max_attempts=BUDGET, require_approval=[])


@pytest.fixture
def postgres(stack: Stack) -> Iterator[PartOutage]:
    with PartOutage(stack, "postgres").restoring() as outage:
        yield outage


@pytest.fixture
def minio(stack: Stack) -> Iterator[PartOutage]:
    with PartOutage(stack, "minio").restoring() as outage:
        yield outage


async def _attempts(handle: WorkflowHandle[Any, Any], activity: str) -> int:
    desc = await handle.describe()
    return max(
        (
            p.attempt
            for p in desc.raw_description.pending_activities
            if p.activity_type.name == activity
        ),
        default=0,
    )


async def _outlast(handle: WorkflowHandle[Any, Any], outage: PartOutage, activity: str) -> None:
    """Keep the part away until ``activity`` has tried more often than its budget."""
    await until(lambda: outage.stopped.is_set(), within=60, what="the outage")
    await until(
        lambda: _at_least(handle, activity, OUTLAST),
        within=120,
        what=f"{activity} to outlast its budget",
    )
    outage.stopped.clear()
    await asyncio.to_thread(outage.start)


async def _at_least(handle: WorkflowHandle[Any, Any], activity: str, n: int) -> bool:
    return await _attempts(handle, activity) >= n


async def test_a_database_outage_in_a_tool_and_a_model_call_is_waited_out(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    postgres: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = itertools.count(1)
    fetched = itertools.count(1)

    def answer(body: Any) -> Reply:
        step = next(steps)
        if step == 1:
            return Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"})
        if step == 2:
            postgres.stop()  # the model's reply cannot be recorded
        return Reply.text("fetched it, all done")

    def on_get(path: str) -> None:
        if next(fetched) == 1:
            postgres.stop()  # the tool's result cannot be recorded

    stub.default = answer
    stub.on_get = on_get
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    caplog.set_level("INFO", logger="temporalio.activity")
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch the page", policy=TIGHT))
        await _outlast(handle, postgres, names.ACT_RUN_TOOL)
        await _outlast(handle, postgres, names.ACT_CALL_MODEL)
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED, result.summary
    assert result.summary == "fetched it, all done"
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    [tool] = tool_messages(messages)
    assert tool.content.startswith("HTTP 404")
    assert [r.attempt >= OUTLAST for r in await activity_runs(handle, names.ACT_RUN_TOOL)] == [True]

    recovered = await events(sessionmaker, handle.id, "infrastructure_recovered")
    assert [(e.payload["activity"], e.step) for e in recovered] == [
        (names.ACT_RUN_TOOL, 1),
        (names.ACT_CALL_MODEL, 2),
    ]
    for event in recovered:
        assert event.payload["part"] == "PostgreSQL"
        assert event.payload["failed_attempts"] >= OUTLAST - 1
        assert event.payload["down_seconds"] > 0
        assert event.payload["last_error"].startswith("PostgreSQL unavailable: ")
    logged = [r.getMessage() for r in caplog.records if "is back after" in r.getMessage()]
    assert len(logged) == 2 and all(m.startswith("PostgreSQL is back after") for m in logged)


async def _through_store_outage(
    client: Client,
    s3_settings: Settings,
    task_queue: str,
    stub: LLMStub,
    minio: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
    goal: str,
) -> tuple[WorkflowHandle[Any, Any], list[Any]]:
    """A session the stub's ``default`` answers, run until it completes whole, with the
    object store kept away until ``run_tool`` has outlasted its budget; its transcript."""
    async with running_worker(client, stub_settings(s3_settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input(goal, policy=TIGHT))
        await _outlast(handle, minio, names.ACT_RUN_TOOL)
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result.summary
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    return handle, messages


async def test_an_object_store_outage_in_a_tool_is_waited_out(
    client: Client,
    s3_settings: Settings,
    task_queue: str,
    stub: LLMStub,
    minio: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    steps = itertools.count(1)

    def answer(body: Any) -> Reply:
        step = next(steps)
        if step == 1:
            minio.stop()  # the artifact cannot be written
            return Reply.tool_call("write_artifact", {"name": "notes.txt", "content": "kept"})
        return Reply.text("written")

    stub.default = answer
    handle, messages = await _through_store_outage(
        client, s3_settings, task_queue, stub, minio, sessionmaker, "write notes"
    )
    [tool] = tool_messages(messages)
    assert tool.content.startswith("stored artifact 'notes.txt'"), tool.content
    [recovered] = await events(sessionmaker, handle.id, "infrastructure_recovered")
    assert recovered.payload["part"] == "object store"
    assert recovered.payload["activity"] == names.ACT_RUN_TOOL


async def test_a_call_that_met_an_outage_before_its_reply_is_not_run_again_there(
    client: Client,
    s3_settings: Settings,
    task_queue: str,
    stub: LLMStub,
    minio: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call that changes nothing is answered before its reply is recorded; when that
    answer meets an outage, the model activity records the reply and hands the call back
    to its own activity (which waits the outage out) without asking the object store a
    second time itself."""
    asked: list[str] = []
    get_bytes = S3Store.get_bytes

    def counted(self: S3Store, sha256: str) -> bytes:
        asked.append(activity.info().activity_type)  # the activity that asked
        return get_bytes(self, sha256)

    monkeypatch.setattr(S3Store, "get_bytes", counted)
    steps = itertools.count(1)

    def answer(body: Any) -> Reply:
        step = next(steps)
        if step == 1:
            return Reply.tool_call("write_artifact", {"name": "notes.txt", "content": "kept"})
        if step == 2:
            minio.stop()  # the artifact cannot be read
            return Reply.tool_call("read_artifact", {"name": "notes.txt"})
        return Reply.text("read")

    stub.default = answer
    _, messages = await _through_store_outage(
        client, s3_settings, task_queue, stub, minio, sessionmaker, "read notes"
    )
    assert [m.content for m in tool_messages(messages)][1] == "kept"
    assert asked.count(names.ACT_CALL_MODEL) == 1, asked
    assert asked.count(names.ACT_RUN_TOOL) >= OUTLAST, asked


async def test_the_providers_own_failures_still_have_a_budget(
    client: Client, settings: Settings, task_queue: str, stub: LLMStub
) -> None:
    stub.default = lambda body: Reply.status(500, message="upstream exploded")
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("fail", policy=TIGHT))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    model_calls = [r for r in stub.requests if r.protocol == "openai"]
    assert len(model_calls) == BUDGET
    [run] = await activity_runs(handle, names.ACT_CALL_MODEL)
    assert run.attempt == BUDGET


async def test_a_database_outage_in_a_low_latency_model_call_is_waited_out(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    postgres: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = await local_agent(sessionmaker, [{"name": "finish"}])
    asked = itertools.count(1)

    def answer(body: Any) -> Reply:
        n = next(asked)
        if n == 1:
            postgres.stop()  # the reply cannot be recorded: the local call is retried
            return Reply.text("not kept")
        if n == 2:
            # The provider's own failure after the outage: one of the two allowed.
            return Reply.status(500, message="upstream hiccup")
        return Reply.text("thought it through")

    stub.default = answer
    caplog.set_level("INFO", logger="temporalio.activity")
    retried = re.compile(rf"{names.ACT_CALL_MODEL} attempt (\d+) retries in (\d+) s")

    def outage_retries() -> list[tuple[int, int]]:
        found = (retried.search(r.getMessage()) for r in caplog.records)
        return [(int(m[1]), int(m[2])) for m in found if m]

    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client, task_queue, session_input("think", agent_id=name, policy=TIGHT)
        )
        await until(lambda: postgres.stopped.is_set(), within=60, what="the outage")
        await until(lambda: len(outage_retries()) >= OUTLAST, within=120, what="outage retries")
        postgres.stopped.clear()
        await asyncio.to_thread(postgres.start)
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED, result.summary
    assert result.summary == "thought it through"
    assert_whole(await transcript(sessionmaker, handle.id))
    # The outage's retries back off as a regular activity's do (1, 2, 4 ... s).
    waits = [wait for _, wait in outage_retries()[:OUTLAST]]
    assert waits == [2**k for k in range(OUTLAST)], waits
    [recovered] = await events(sessionmaker, handle.id, "infrastructure_recovered")
    assert recovered.payload["activity"] == names.ACT_CALL_MODEL
    assert recovered.payload["part"] == "PostgreSQL"
    assert recovered.payload["failed_attempts"] >= OUTLAST
