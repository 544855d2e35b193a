"""One agent step's activity work stays within a fixed number of statements and
transactions (issue #12), and stays exactly once.

``call_model`` (a model that answers at once) and ``run_tool`` run as the worker runs
them, with the worker's context cache warm: the reply's idempotency check, the context's
reads and the kept recall's check share one transaction; the reply and its usage event
are one statement, the tool's result and its event another. Counted, never timed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from temporalio.testing import ActivityEnvironment

from tests.support.zero_model import ZeroModel
from vigil.activities.context_cache import CachingEmbedder, ContextCache, ContextCacheConfig
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.schema.payloads import CallModelInput, RunToolInput
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration

STATEMENTS_PER_STEP = 14
"""Four role switches; the reply check, the session, new messages, the summary's key, the
artifacts and the kept recall's check; the reply with its event and the usage; the tool
result's check; the result with its event. Before: 18 statements in 6 transactions."""
TRANSACTIONS_PER_STEP = 4


class Counted:
    statements = 0
    transactions = 0


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Counted]:
    counted = Counted()

    def statement(*_: Any) -> None:
        counted.statements += 1

    def begin(*_: Any) -> None:
        counted.transactions += 1

    event.listen(engine.sync_engine, "before_cursor_execute", statement)
    event.listen(engine.sync_engine, "begin", begin)
    try:
        yield counted
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", statement)
        event.remove(engine.sync_engine, "begin", begin)


async def test_a_warm_step_stays_within_its_round_trips_and_records_once(
    settings: Settings, engine: AsyncEngine, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=sid, agent_id=agent, goal="survey the river", status="running"
        )
        await record.append_messages(
            db, sid, agent, [record.NewMessage(seq=0, role="user", content="survey the river")]
        )
    memory = MemoryStore(sessionmaker, CachingEmbedder(HashingEmbedder(384)))
    await memory.add(agent, "The river gauge sits at the north bridge.", subject="gauge")
    async with httpx.AsyncClient() as http:
        acts = SessionActivities(
            settings=settings,
            sessionmaker=sessionmaker,
            store=make_store(settings),
            provider=ZeroModel(),
            http=http,
            memory=memory,
            context_cache=ContextCache(ContextCacheConfig(time_budget_ms=None)),
        )
        env = ActivityEnvironment()

        def model_input(step: int) -> CallModelInput:
            return CallModelInput(
                session_id=sid,
                agent_id=agent,
                step=step,
                seq=2 * step - 1,
                allowed_tools=["http_fetch", "finish"],
                context_messages=40,
            )

        async def step(n: int) -> None:
            out = await env.run(acts.call_model, model_input(n))
            assert out.tool_calls and not out.replayed
            await env.run(
                acts.run_tool,
                RunToolInput(
                    session_id=sid,
                    agent_id=agent,
                    step=n,
                    seq=2 * n,
                    model_seq=2 * n - 1,
                    call_index=0,
                ),
            )

        for n in (1, 2):  # the cache warms: the window, the recall
            await step(n)
        with counting(engine) as counted:
            await step(3)
        assert counted.statements <= STATEMENTS_PER_STEP, counted.statements
        assert counted.transactions <= TRANSACTIONS_PER_STEP, counted.transactions

        # Run again (a retry after a lost completion): the recorded reply comes back.
        again = await env.run(acts.call_model, model_input(3))
        assert again.replayed and again.tool_calls
    async with sessionmaker() as db:
        seqs = [m.seq for m in await record.messages_page(db, sid)]
        events = await record.list_events(db, sid)
        usage = await record.get_session(db, sid)
    assert seqs == list(range(7))
    assert [e.key for e in events if e.kind in ("model_call", "tool_call")] == [
        "model:1",
        "tool:1:0",
        "model:2",
        "tool:2:0",
        "model:3",
        "tool:3:0",
    ]
    assert usage is not None and usage.tokens_in == 150 and usage.step == 3
