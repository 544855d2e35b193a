"""Temporal's cancel ends a session as Cancelled, recorded, with a whole transcript."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import CancelledError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    transcript,
    until,
)
from vigil.activities.record.store import StoredMessage
from vigil.schema import names
from vigil.schema.payloads import ApproveInput, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def _assert_cancelled(
    handle: WorkflowHandle[Any, Any], sessionmaker: async_sessionmaker[DbSession]
) -> list[StoredMessage]:
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    row = await session_row(sessionmaker, handle.id)
    assert row.status == "cancelled" and row.finished_at is not None
    assert row.summary == "cancelled by a human"
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    final = messages[-1]
    assert final.role == "system" and final.content.startswith("Session ended: cancelled")
    (ended_ev,) = await events(sessionmaker, handle.id, "session_ended")
    assert ended_ev.payload["status"] == "cancelled"
    # The end's event names the seq its message was written at.
    assert ended_ev.payload["seq"] == final.seq
    return messages


async def test_cancel_while_waiting_for_approval(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}))
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        await handle.cancel()
        messages = await _assert_cancelled(handle, sessionmaker)
        st = await eventually(handle, lambda s: s.status == SessionStatus.CANCELLED)

    assert st.pending_approvals == []
    assert len(stub.requests) == 1
    # The call that waited for approval was answered (not run), so the record is whole.
    assert [m.role for m in messages] == ["user", "assistant", "tool", "system"]
    assert messages[2].content.startswith("error: not run: the session ended (cancelled)")
    assert await events(sessionmaker, handle.id, "tool_call") == []


async def test_cancel_while_the_model_is_answering(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The model call hangs; cancel arrives while the activity is in flight.
    stub.enqueue(Reply.hang(60, then=Reply.tool_call("finish", {"summary": "too late"})))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("think hard", heartbeat_seconds=2))
        await until(lambda: len(stub.requests) >= 1, what="model call in flight")
        await handle.cancel()
        messages = await _assert_cancelled(handle, sessionmaker)

    assert [m.role for m in messages] == ["user", "assistant", "system"]
    assert messages[1].content.startswith("[no reply recorded")
    assert await events(sessionmaker, handle.id, "model_call") == []
    # The stand-in for the reply is no step taken: the end is told at step 0.
    (ended_ev,) = await events(sessionmaker, handle.id, "session_ended")
    shown = (await handle.describe()).typed_search_attributes
    assert (messages[-1].step, ended_ev.step, shown.get(names.SA_STEP)) == (0, 0, 0)


async def test_cancel_while_a_tool_runs_does_not_say_it_did_not_run(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # An approved fetch runs in its own activity and takes a while; the cancel ends the
    # session meanwhile. The fetch may still finish (its activity learns of the cancel at
    # a heartbeat): the ending's answer said "not run", untrue of a call that ran.
    _, loading = stub.slow_page("/slow", 3.0)
    stub.enqueue(Reply.tool_call("http_fetch", {"url": f"{stub.url}/slow"}))
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="ana"))
        await until(lambda: loading.is_set() or None, what="the fetch running")
        await handle.cancel()
        messages = await _assert_cancelled(handle, sessionmaker)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "system"]
    assert messages[2].content == (
        "error: no result: the session ended (cancelled) before this call answered; it may "
        "still have run (its tool_call event says what it did)"
    ), messages[2].content
