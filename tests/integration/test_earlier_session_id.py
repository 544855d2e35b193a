"""A workflow started under the id of a session that has closed (a schedule's backfill of a
window it ran already, a plain Temporal start) opened that session's record as its own:
it took the recorded messages for its model's replies (a "Session ended: cancelled" line
became the reply), and wrote a second end, so a cancelled run read completed. The record
is the earlier session's: the new run ends at once, failed, and writes nothing there."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    events,
    local_agent,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    transcript,
    wait_status,
)
from vigil.schema import names
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["default", "low-latency"])
async def test_a_run_under_a_closed_sessions_id_writes_nothing_to_its_record(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    mode: str,
) -> None:
    sid = f"earlier-{uuid.uuid4().hex[:8]}"
    stub.enqueue(Reply.tool_call("wait_until", {"seconds": 3600, "reason": "later"}))
    tools = [{"name": "wait_until"}]
    agent = await local_agent(sessionmaker, tools) if mode == "low-latency" else "agent-test"
    arg = session_input("once", agent_id=agent)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        first = await start(client, task_queue, arg, session_id=sid)
        await wait_status(first, SessionStatus.SLEEPING)
        await first.cancel()
        with pytest.raises(WorkflowFailureError):
            await first.result()
        before = await transcript(sessionmaker, sid)
        again = await start(client, task_queue, arg, session_id=sid)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(again.result(), 60)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == names.ERR_EARLIER_SESSION, cause
    assert "belongs to an earlier session" in str(cause), cause
    # One cancelled before any worker took it: its opening rides with its end's records.
    cancelled = await start(client, task_queue, arg, session_id=sid)
    await cancelled.cancel()
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(cancelled.result(), 60)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == names.ERR_EARLIER_SESSION, cause
    assert len(stub.requests) == 1  # the second run called no model
    assert [(m.seq, m.content) for m in await transcript(sessionmaker, sid)] == [
        (m.seq, m.content) for m in before
    ]
    ended = await events(sessionmaker, sid, "session_ended")
    assert [e.key for e in ended] == ["session:ended:cancelled"], ended
    assert (await session_row(sessionmaker, sid)).status == SessionStatus.CANCELLED.value
