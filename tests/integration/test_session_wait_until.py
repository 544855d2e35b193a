"""`wait_until` sleeps on a durable timer and wakes on time, or early when a human says so."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    events,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    tool_messages,
    transcript,
    until,
    wait_status,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, SessionResult, SessionStatus, ToolPolicy, WakeInput
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _sleep_then_finish(stub: LLMStub, seconds: float) -> None:
    stub.enqueue(
        Reply.tool_call("wait_until", {"seconds": seconds, "reason": "wait for the data"}),
        Reply.tool_call("finish", {"summary": "awake"}),
    )


async def _sleeping_in_pg(sm: async_sessionmaker[DbSession], sid: str) -> bool:
    return (await session_row(sm, sid)).status == "sleeping"


async def test_short_sleep_wakes_as_planned(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _sleep_then_finish(stub, 2)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("wait a bit"))
        st = await wait_status(handle, SessionStatus.SLEEPING)
        assert st.waiting_for is not None and st.waiting_for.startswith("timer until ")
        await until(lambda: _sleeping_in_pg(sessionmaker, handle.id), what="status sleeping")
        assert len(stub.requests) == 1
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and len(stub.requests) == 2
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (slept,) = [m for m in tool_messages(messages) if m.name == "wait_until"]
    assert slept.content.startswith("woke at ") and slept.content.endswith(" as planned")
    # Woken by the durable timer: the workflow clock advanced by the requested seconds.
    woke = datetime.fromisoformat(slept.content.split()[2])
    planned = datetime.fromisoformat(st.waiting_for.removeprefix("timer until "))
    assert woke >= planned
    assert stub.requests[1].body["messages"][-1]["content"] == slept.content


@pytest.mark.parametrize("via", ["signal", "update"])
async def test_long_sleep_is_woken_early_by_a_human(
    via: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    gate = threading.Event()
    stub.enqueue(Reply.tool_call("wait_until", {"seconds": 3600}))

    def after_waking(_request: Any) -> Reply:
        gate.wait(20)
        return Reply.tool_call("finish", {"summary": "awake"})

    stub.default = after_waking
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("wait an hour"))
        await wait_status(handle, SessionStatus.SLEEPING)
        arg = WakeInput(by="erin", reason="data arrived")
        if via == "signal":
            await handle.signal(names.SIG_WAKE, arg)
        else:
            ack = await handle.execute_update(names.UPD_WAKE, arg, result_type=Ack)
            assert ack.accepted and ack.message == "woken"
        await until(lambda: len(stub.requests) >= 2, what="the model called after waking")
        # Awake now: another wake is refused.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(names.UPD_WAKE, arg, result_type=Ack)
        assert "not sleeping" in str(refused.value.cause)
        gate.set()
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (slept,) = [m for m in tool_messages(messages) if m.name == "wait_until"]
    assert slept.content.startswith("woken early by erin at ")
    assert stub.requests[1].body["messages"][-1]["content"] == slept.content
    (ev,) = await events(sessionmaker, handle.id, "wake")
    assert (ev.actor, ev.reason) == ("erin", "data arrived") and ev.payload["at"]


@pytest.mark.parametrize(
    ("until_text", "why"),
    [
        ("garbage", "not an ISO 8601 date and time"),
        ("9999-12-31T23:59:59-14:00", "out of range"),  # past the year 9999 in UTC
        ("0001-01-01T00:00:00+14:00", "out of range"),  # before the year 1 in UTC
    ],
)
async def test_an_until_that_is_no_time_is_the_models_error_and_the_session_goes_on(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    until_text: str,
    why: str,
) -> None:
    """Its parse raised in the tool's activity: retried until the attempts ran out, then
    the session failed (and its transcript said the call was not run)."""
    stub.enqueue(
        Reply.tool_call("wait_until", {"until": until_text}),
        Reply.tool_call("finish", {"summary": "did not wait"}),
    )
    policy = ToolPolicy(require_approval=[], tool_max_attempts=2)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("wait badly", policy=policy))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED, result
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (answer,) = [m for m in tool_messages(messages) if m.name == "wait_until"]
    assert answer.content.startswith("error: invalid arguments for wait_until at until: ")
    assert why in answer.content, answer.content


async def test_an_until_that_is_no_time_counts_as_a_malformed_reply(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A reply whose only call is a wait that names no time is as malformed as any other
    call with bad arguments: the check was made only where the tool ran, so the reply was
    read as valid and a model that sent such waits for ever was never stopped."""
    stub.enqueue(
        Reply.tool_call("wait_until", {"until": "garbage"}),
        Reply.tool_call("finish", {"summary": "never reached"}),
    )
    policy = ToolPolicy(require_approval=[], max_malformed_replies=0)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("wait badly", policy=policy))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.FAILED, result
    assert "malformed replies" in result.summary, result.summary
    messages = await transcript(sessionmaker, handle.id)
    (answer,) = [m for m in tool_messages(messages) if m.name == "wait_until"]
    assert answer.content.startswith("error: invalid arguments for wait_until at until: ")
