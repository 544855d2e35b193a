"""Each budget ends a session cleanly, with a final summary message and the reason why."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

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
    wait_status,
)
from vigil.activities.models.pricing import PRICES
from vigil.schema.payloads import Budget, SessionResult, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _notes_forever(stub: LLMStub, usage: tuple[int, int] | None = None) -> None:
    def respond(_request: Any) -> Reply:
        return Reply.tool_call("write_artifact", {"name": "note.txt", "content": "n"}, usage=usage)

    stub.default = respond


async def _ended_cleanly(
    sm: async_sessionmaker[DbSession], result: SessionResult, status: SessionStatus
) -> None:
    assert result.status == status
    row = await session_row(sm, result.session_id)
    assert (row.status, row.summary) == (status.value, result.summary)
    assert row.finished_at is not None
    messages = await transcript(sm, result.session_id)
    assert_whole(messages)
    final = messages[-1]
    assert final.role == "system"
    assert final.content == f"Session ended: {status.value}. {result.summary}"
    (ended,) = await events(sm, result.session_id, "session_ended")
    # The run that wrote the end and its message's seq (what a retried write compares).
    assert ended.payload == {
        "status": status.value,
        "summary": result.summary,
        "run_id": ended.payload["run_id"],
        "seq": final.seq,
    }
    assert len(ended.payload["run_id"]) >= 32


async def test_max_steps(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _notes_forever(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input(budget=Budget(max_steps=3)))
        result: SessionResult = await handle.result()
    await _ended_cleanly(sessionmaker, result, SessionStatus.BUDGET_EXHAUSTED)
    assert result.summary == "step budget of 3 used"
    assert result.steps == 3 and len(stub.requests) == 3


async def test_max_tokens(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _notes_forever(stub, usage=(300, 200))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input(budget=Budget(max_tokens=1000)))
        result: SessionResult = await handle.result()
    await _ended_cleanly(sessionmaker, result, SessionStatus.BUDGET_EXHAUSTED)
    assert result.summary == "token budget used (1000 of 1000)"
    assert result.steps == 2 and len(stub.requests) == 2
    assert (result.tokens_in, result.tokens_out) == (600, 400)
    row = await session_row(sessionmaker, handle.id)
    assert (row.tokens_in, row.tokens_out) == (600, 400)


async def test_max_cost(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    price = PRICES["gpt-4o"]
    usage = (100_000, 10_000)
    per_call = (usage[0] * price.input + usage[1] * price.output) / 1_000_000  # $0.35
    _notes_forever(stub, usage=usage)
    cfg = stub_settings(settings, stub.url_openai, model_name="gpt-4o")
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input(budget=Budget(max_cost_usd=0.5)))
        result: SessionResult = await handle.result()
    await _ended_cleanly(sessionmaker, result, SessionStatus.BUDGET_EXHAUSTED)
    assert result.steps == 2 and len(stub.requests) == 2
    assert result.cost_usd == pytest.approx(2 * per_call)
    assert result.summary == f"cost budget used (${2 * per_call:.4f} of $0.5000)"
    assert stub.requests[0].body["model"] == "gpt-4o"
    row = await session_row(sessionmaker, handle.id)
    assert row.cost_usd == pytest.approx(2 * per_call)


async def test_wall_clock_deadline_while_asleep(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(Reply.tool_call("wait_until", {"seconds": 60, "reason": "wait for data"}))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input(budget=Budget(max_seconds=3)))
        await wait_status(handle, SessionStatus.SLEEPING)
        result: SessionResult = await handle.result()
    await _ended_cleanly(sessionmaker, result, SessionStatus.TIMED_OUT)
    assert result.summary == "the session's deadline passed"
    assert len(stub.requests) == 1
    (slept,) = tool_messages(await transcript(sessionmaker, handle.id))
    assert "the session's deadline passed" in slept.content
    assert "as planned" not in slept.content
