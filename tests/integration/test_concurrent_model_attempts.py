"""Two attempts of one model step at once (a local activity run again after its workflow
task was lost, an activity whose heartbeat was lost while it still ran): the reply the
record kept is the step's. The attempt that wrote second returned its own reply, which the
record does not hold: its tool calls, tokens and preview went on to the workflow."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.testing import ActivityEnvironment

from vigil.activities.context_cache import ContextCache, ContextCacheConfig
from vigil.activities.models.base import ChatMessage, ModelReply, ToolCall, ToolSpec, Usage
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.schema.payloads import CallModelInput
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration


class TwoAnswers:
    """The first call answers a fetch once ``let_go`` is set; the second, at once, finish."""

    def __init__(self) -> None:
        self.let_go = asyncio.Event()
        self.asked = asyncio.Event()
        self.calls = 0

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        self.calls += 1
        n = self.calls
        if n == 1:
            self.asked.set()
            await self.let_go.wait()
            call = ToolCall(id="late", name="http_fetch", arguments='{"url": "http://a.invalid/"}')
            tokens = 900
        else:
            call = ToolCall(id="first", name="finish", arguments=json.dumps({"summary": "done"}))
            tokens = 10
        return ModelReply(
            content=f"answer {n}",
            tool_calls=[call],
            usage=Usage(input_tokens=tokens, output_tokens=1),
            finish_reason="tool_calls",
            model="two",
            latency_ms=0.001,
        )

    async def aclose(self) -> None:
        return None


async def test_the_attempt_that_wrote_second_returns_the_recorded_reply(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=sid, agent_id=agent, goal="survey", status="running"
        )
        await record.append_messages(
            db, sid, agent, [record.NewMessage(seq=0, role="user", content="survey")]
        )
    model = TwoAnswers()
    async with httpx.AsyncClient() as http:
        acts = SessionActivities(
            settings=settings,
            sessionmaker=sessionmaker,
            store=make_store(settings),
            provider=model,
            http=http,
            context_cache=ContextCache(ContextCacheConfig(time_budget_ms=None)),
        )
        arg = CallModelInput(
            session_id=sid,
            agent_id=agent,
            step=1,
            seq=1,
            allowed_tools=["http_fetch", "finish"],
            context_messages=40,
        )
        late = asyncio.create_task(ActivityEnvironment().run(acts.call_model, arg))
        await model.asked.wait()
        first = await ActivityEnvironment().run(acts.call_model, arg)
        model.let_go.set()
        second = await late

    assert [c.name for c in first.tool_calls] == ["finish"]
    # The late attempt tells the reply the record holds, not its own.
    assert [c.name for c in second.tool_calls] == ["finish"], second
    assert (second.tokens_in, second.content_preview) == (10, "answer 2"), second
    async with sessionmaker() as db:
        [reply] = [m for m in await record.messages_page(db, sid) if m.role == "assistant"]
        row = await record.get_session(db, sid)
    assert reply.content == "answer 2"
    assert row is not None and row.tokens_in == 10
