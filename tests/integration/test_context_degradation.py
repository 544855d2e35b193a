"""A recall that runs past the context time budget is not waited for (issue #14).

Recall is made slow deterministically: the test holds PostgreSQL's ACCESS EXCLUSIVE lock
on ``memories``, so recall's reads wait on the lock for as long as the test likes, while
the record's reads (messages, events, the session) go on. The step must go on with the
recent messages and the running summary, and say that it degraded; no timing asserted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.integration.test_context_cache import BUDGET, _open
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, session_input, start, stub_settings, until
from vigil.activities.context import ContextRead, assemble, read_context
from vigil.activities.context_cache import ContextCache
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record
from vigil.activities.record.lean import engine_of
from vigil.activities.record.rls import bound_acting_for
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@asynccontextmanager
async def memories_locked(sm: async_sessionmaker[DbSession]) -> AsyncIterator[None]:
    """Hold the lock every read of ``memories`` waits on, until the block ends."""
    async with sm() as db:
        await db.execute(text("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await db.rollback()


async def test_a_slow_recall_leaves_recent_messages_and_summary_and_is_recorded(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _open(sessionmaker, 300)
    memory = MemoryStore(sessionmaker, HashingEmbedder(384))
    await memory.add(agent, "The river gauge sits at the north bridge.", subject="gauge")
    cache = ContextCache()
    async with memories_locked(sessionmaker):
        got = await assemble(
            sessionmaker,
            session_id=sid,
            agent_id=agent,
            budget=BUDGET,
            memory=memory,
            cache=cache,
            time_budget_ms=50,
            step=7,
        )
    assert got.degraded is not None and got.degraded.stage in ("recall", "assembly")
    assert got.memories == 0
    assert got.summary_upto_seq is not None
    assert "Summary of earlier turns" in got.messages[1].content
    assert got.messages[-1].tool_call_id == "c298"  # the newest message (seq 299)
    async with sessionmaker() as db:
        event = await record.get_event(db, sid, "context_degraded:7")
    assert event is not None and event.kind == "context_degraded" and event.step == 7
    assert event.payload["stage"] == got.degraded.stage
    assert event.payload["budget_ms"] == 50 and event.payload["elapsed_ms"] > 0

    # The recall went on once the lock was gone, and its result is there for the next step.
    await cache.settled()
    after = await assemble(
        sessionmaker, session_id=sid, agent_id=agent, budget=BUDGET, memory=memory, cache=cache
    )
    assert after.degraded is None and after.memories == 1
    assert cache.stats["recall_hit"] == 1


async def test_a_session_step_goes_on_when_recall_is_stuck(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    memory = MemoryStore(sessionmaker, HashingEmbedder(settings.embedding_dim))
    await memory.add(agent, "Gauges are read at dawn.", subject="gauges")
    stub.enqueue(Reply.tool_call("finish", {"summary": "read the gauges"}))
    cfg = stub_settings(settings, stub.url_openai, context_time_budget_ms=50.0)
    async with running_worker(client, cfg, task_queue):
        async with memories_locked(sessionmaker):
            handle = await start(
                client, task_queue, session_input("read the gauges", agent_id=agent)
            )

            async def degraded() -> record.StoredEvent | None:
                async with sessionmaker() as db:
                    return await record.get_event(db, handle.id, "context_degraded:1")

            # Recorded while recall is still stuck behind the lock.
            event = await until(degraded, what="the context_degraded event")
        result = await handle.result()  # `remember` writes a memory: after the lock
        async with sessionmaker() as db:
            call = await record.get_event(db, handle.id, "model:1")
    assert result.status == SessionStatus.COMPLETED
    assert event.payload["stage"] in ("recall", "assembly")
    assert call is not None and call.payload["context_degraded"]["stage"] == event.payload["stage"]
    [request] = [r for r in stub.requests if r.body and "messages" in r.body]
    sent = json.dumps(request.body["messages"])
    assert "read the gauges" in sent and "Relevant long-term memories" not in sent


async def _kept_recall(
    sm: async_sessionmaker[DbSession],
) -> tuple[str, str, MemoryStore, ContextCache]:
    """A 300-message session whose window and recall (one memory) a cache keeps."""
    sid, agent = await _open(sm, 300)
    memory = MemoryStore(sm, HashingEmbedder(384))
    await memory.add(agent, "The river gauge sits at the north bridge.", subject="gauge")
    cache = ContextCache()
    kept = await assemble(
        sm, session_id=sid, agent_id=agent, budget=BUDGET, memory=memory, cache=cache
    )
    assert kept.memories == 1
    return sid, agent, memory, cache


async def test_a_kept_recall_whose_check_waits_on_a_lock_is_not_waited_for(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The check of a kept recall result runs in the context's read statement; behind a
    # lock it waits no longer than the budget, and the step goes on without memories.
    sid, agent, memory, cache = await _kept_recall(sessionmaker)
    async with memories_locked(sessionmaker):
        got = await assemble(
            sessionmaker,
            session_id=sid,
            agent_id=agent,
            budget=BUDGET,
            memory=memory,
            cache=cache,
            time_budget_ms=50,
            step=8,
        )
    assert got.degraded is not None and got.memories == 0
    assert got.messages[-1].tool_call_id == "c298"
    await cache.settled()
    after = await assemble(
        sessionmaker, session_id=sid, agent_id=agent, budget=BUDGET, memory=memory, cache=cache
    )
    assert after.degraded is None and after.memories == 1


async def test_the_reads_recall_check_behind_a_lock_gives_up_inside_postgresql(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The model call reads the record in one statement on a connection bound to the agent;
    # the kept recall's check in it waits on a lock no longer than the budget, bounded by
    # PostgreSQL: the read answers with the record's part, says the check was given up,
    # and leaves no backend of its own waiting on the lock.
    sid, agent, memory, cache = await _kept_recall(sessionmaker)
    engine = engine_of(sessionmaker)

    async def read() -> ContextRead:
        async with bound_acting_for(engine, agent) as db:
            return await read_context(
                db,
                session_id=sid,
                agent_id=agent,
                budget=BUDGET,
                memory=memory,
                cache=cache,
                time_budget_ms=50,
            )

    async with memories_locked(sessionmaker):
        got = await asyncio.wait_for(read(), timeout=60)  # a guard: it must not hang
        assert got.recall_blocked and not got.recall_checked and got.recalled is None
        assert got.warm and got.window.recent[-1].seq == 299
        async with sessionmaker() as db:
            waiting = (
                await db.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%vigil_context_read%'"
                    )
                )
            ).scalar_one()
        assert waiting == 0
    got = await read()  # the lock gone, the check rides in the read again
    assert got.recall_checked and not got.recall_blocked and got.recalled is not None
