"""One agent step's activity work stays within a fixed number of statements and
transactions (issue #12), and stays exactly once.

``call_model`` (a model that answers at once) and ``run_tool`` run as the worker runs
them, with the worker's context cache warm: the reply's idempotency check, the context's
reads and the kept recall's check share one transaction; the reply and its usage event
are one statement, the tool's result and its event another (in the folded step, a call
that changes nothing is answered in the reply's statement), each on a connection already
acting for the agent. Counted, never timed.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.testing import ActivityEnvironment

from tests.support.round_trips import counting
from tests.support.zero_model import ZeroModel
from vigil.activities.context_cache import CachingEmbedder, ContextCache, ContextCacheConfig
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.schema.payloads import CallModelInput, RunToolInput
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration

ROUND_TRIPS_PER_STEP = 4
"""Counted at the driver, so every message sent to PostgreSQL and waited for counts,
whatever layer sent it. Every statement runs on a connection already acting for the
agent (``bound_acting_for``), each its own transaction: the context's read (one call of
``vigil_context_read``: the session with the reply check and the summary's key, new
messages, the artifacts and the kept recall's check); the reply with its event and the
usage; the tool result's check; the result with its event. The worker's engine pings no
connection used a moment ago. Before the read was one statement: 9 round trips in one
transaction; before bound connections: 15 in 4; before the step's transactions went
straight to the driver: 26 through SQLAlchemy."""
TRANSACTIONS_PER_STEP = 0

ROUND_TRIPS_PER_FOLDED_STEP = 2
"""The same step folded (the tool run by the model activity, as new sessions run it): the
call is refused by its arguments alone (a host on no allowlist), so nothing runs and its
answer is written in the reply's statement: the context's read and that statement. (3
when the answer was a statement of its own after the reply; 8 before the read was one
statement, 12 before bound connections.)"""
TRANSACTIONS_PER_FOLDED_STEP = 0

IDLE_BEFORE_PING = 60.0


@pytest.mark.parametrize("folded", [False, True], ids=["tool-activity", "folded"])
async def test_a_warm_step_stays_within_its_round_trips_and_records_once(
    settings: Settings, database_url: str, folded: bool
) -> None:
    # An engine as the worker makes it, pinging connections only after a minute idle (the
    # worker: a second) so that a stall of this machine adds no ping to the count.
    engine = make_engine(database_url, ping_after_idle=IDLE_BEFORE_PING)
    try:
        await _warm_step(settings, make_sessionmaker(engine), folded=folded)
    finally:
        await engine.dispose()


async def _warm_step(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession], *, folded: bool
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
                fold_tools=["http_fetch"] if folded else None,
            )

        async def step(n: int) -> None:
            out = await env.run(acts.call_model, model_input(n))
            assert out.tool_calls and not out.replayed
            if folded:
                assert [r.seq for r in out.folded or []] == [2 * n]
                return
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
        cache = acts.context_cache
        hits, misses = cache.stats["recall_hit"], cache.stats["recall_miss"]
        with counting() as counted:
            await step(3)
        # The kept recall was used, its memory checked live by the read itself.
        assert (cache.stats["recall_hit"], cache.stats["recall_miss"]) == (hits + 1, misses)
        trips, transactions = (
            (ROUND_TRIPS_PER_FOLDED_STEP, TRANSACTIONS_PER_FOLDED_STEP)
            if folded
            else (ROUND_TRIPS_PER_STEP, TRANSACTIONS_PER_STEP)
        )
        assert counted.round_trips <= trips, counted.round_trips
        assert counted.transactions <= transactions, counted.transactions

        # Run again (a retry after a lost completion): the recorded reply comes back.
        again = await env.run(acts.call_model, model_input(3))
        assert again.replayed and again.tool_calls
        if folded:  # and the recorded result of its folded call, run nothing again
            assert [(r.seq, r.ok) for r in again.folded or []] == [(6, False)]
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


async def test_a_recall_after_the_first_checks_its_embedder_in_the_search(
    database_url: str,
) -> None:
    # Once the store knows the agent's memory count, the search runs on a connection
    # acting for the agent with that ef_search (bound_acting_for), the embedder check
    # riding in it: the search, and here (a small agent: fewer memories than candidates
    # wanted) the count of what the agent has, with no transaction. (It was BEGIN with
    # the settings, the search, the count and COMMIT.)
    engine = make_engine(database_url, ping_after_idle=IDLE_BEFORE_PING)
    try:
        memory = MemoryStore(make_sessionmaker(engine), HashingEmbedder(384))
        agent = f"agent-{uuid.uuid4()}"
        await memory.add(agent, "The river gauge sits at the north bridge.", subject="gauge")
        await memory.add(agent, "Boats moor south of the weir.", subject="boats")
        first = await memory.recall(agent, "river gauge north bridge", mode="vector")
        await memory.recall(agent, "river gauge north bridge", mode="vector")  # binds one
        with counting() as counted:
            again = await memory.recall(agent, "river gauge north bridge", mode="vector")
        assert [m.id for m in again] == [m.id for m in first] and again[0].subject == "gauge"
        assert (counted.round_trips, counted.transactions) == (2, 0), counted.round_trips
    finally:
        await engine.dispose()
