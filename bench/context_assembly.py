"""Activity work per step: what the model activity spends besides the model itself.

Prints figures; asserts nothing. A session of N messages (tool exchanges with long tool
output), an agent with M memories (hashing embedder), then:

(a) context assembly alone (``activities.context.assemble``): the first call (writes the
    summary), then repeated calls without and with the worker's context cache;
(b) activity work per step: one step of the loop run through the real activities
    (``call_model`` with a zero-latency in-process model, then ``run_tool`` recording the
    tool's result, as the worker runs them, in Temporal's activity environment): context
    assembly, recall and the records, with the worker's cache cold (a worker that never
    saw the session: fresh context and embedding caches every step) and warm; and warm
    with the tool folded into the model activity (``fold_tools``, as new sessions run a
    step: no ``run_tool`` activity). Median and p99 over the steps, the three sessions
    stepped in turn; the goal is under 5 ms median warm at 2,000 messages and 10,000
    memories (issue #12).

    uv run python -m bench.context_assembly                  # the test stack's server
    uv run python -m bench.context_assembly --database-url postgresql://... --steps 300
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.testing import ActivityEnvironment

from tests.support.round_trips import Counted, counting
from tests.support.zero_model import ZeroModel
from vigil.activities.context import ContextBudget, assemble
from vigil.activities.context_cache import CachingEmbedder, ContextCache, ContextCacheConfig
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.schema.payloads import CallModelInput, RunToolInput
from vigil.workers.db import (
    WORKER_PING_AFTER_IDLE_SECONDS,
    make_engine,
    make_sessionmaker,
    migrate_sync,
)
from vigil.workers.settings import Settings, asyncpg_dsn
from vigil.workers.wiring import make_store

AGENT = "agent-ctx"
CONTEXT = 40
"""Recent messages the model sees (StartSessionInput's default)."""
DIM = 384


def _messages(n: int) -> list[record.NewMessage]:
    msgs = []
    for seq in range(n):
        if seq % 3 == 1:
            msgs.append(
                record.NewMessage(
                    seq=seq,
                    role="assistant",
                    content=f"step {seq}: checking gauge {seq % 17}",
                    tool_calls=[
                        {"id": f"c{seq}", "name": "recall", "arguments": '{"query": "depth"}'}
                    ],
                )
            )
        elif seq % 3 == 2:
            msgs.append(
                record.NewMessage(
                    seq=seq,
                    role="tool",
                    name="recall",
                    tool_call_id=f"c{seq - 1}",
                    content=f"gauge {seq % 17} depth {seq % 97} cm " * 40,
                )
            )
        else:
            msgs.append(record.NewMessage(seq=seq, role="user", content=f"note {seq}"))
    return msgs


async def _memories(url: str, n: int) -> None:
    """``n`` memories of the agent, embedded by the hashing embedder, inserted in bulk."""
    embedder = HashingEmbedder(DIM)
    rows = []
    for i in range(n):
        content = f"gauge {i % 50} sits {i} m from bridge {i % 7}"
        vector = "[" + ",".join(f"{x:.6f}" for x in embedder.embed_one(content)) + "]"
        rows.append((AGENT, content, vector))
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.executemany(
            "INSERT INTO memories (agent_id, kind, content, importance, dim, embedding) "
            f"VALUES ($1, 'fact', $2, 0.5, {DIM}, $3::vector)",
            rows,
        )
        await conn.execute("VACUUM ANALYZE memories")
        # The record's statistics as autovacuum keeps them on a live server: without
        # them the planner guesses a session's messages are few and, under row-level
        # security, scans the agent's every message beside the session's index.
        await conn.execute("ANALYZE sessions, messages, events")
    finally:
        await conn.close()


def _figures(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered):6.2f} ms, p99 {p99:6.2f} ms"


async def _assembly(
    sm: async_sessionmaker[DbSession], sid: str, memory: MemoryStore, args: argparse.Namespace
) -> None:
    budget = ContextBudget(total_tokens=args.tokens)
    started = time.perf_counter()
    first = await assemble(sm, session_id=sid, agent_id=AGENT, budget=budget, memory=memory)
    first_ms = (time.perf_counter() - started) * 1000
    print(f"(a) context assembly, budget {args.tokens} tokens, recent window {budget.max_recent}")
    print(f"    first call (summarises {first.summary_upto_seq} older turns): {first_ms:.1f} ms")
    cache = ContextCache(ContextCacheConfig(time_budget_ms=None))
    for label, kept in (("no cache", None), ("cache", cache)):
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            got = await assemble(
                sm, session_id=sid, agent_id=AGENT, budget=budget, memory=memory, cache=kept
            )
            times.append((time.perf_counter() - started) * 1000)
        sent = f"{len(got.messages)} messages, ~{got.tokens} tokens sent"
        print(f"    repeated, {label:8}: {_figures(times)} ({sent})")


class TimedActivities(SessionActivities):
    """The worker's activities, with the time of context assembly (recall included) noted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.assembly_ms: list[float] = []
        self._read_ms = 0.0

    async def _read_context(self, *args: Any, **kwargs: Any) -> Any:
        # The record's part, read by the statement that also checks for a written reply.
        started = time.perf_counter()
        try:
            return await super()._read_context(*args, **kwargs)
        finally:
            self._read_ms = (time.perf_counter() - started) * 1000

    async def _context(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await super()._context(*args, **kwargs)
        finally:
            took = (time.perf_counter() - started) * 1000
            self.assembly_ms.append(took + self._read_ms)
            self._read_ms = 0.0


class Mode:
    """One session stepped through the activities, its worker's cache cold or warm."""

    def __init__(
        self, acts: TimedActivities, sid: str, first_seq: int, *, warm: bool, folded: bool = False
    ) -> None:
        self.acts, self.sid, self.warm, self.folded = acts, sid, warm, folded
        self.seq, self.step = first_seq, 1
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.round_trips: list[int] = []
        self.transactions: list[int] = []
        self.env = ActivityEnvironment()
        self.inner = acts.memory.embedder.inner if acts.memory is not None else None

    async def one(self, counter: Counted, *, measured: bool = True) -> None:
        acts = self.acts
        if not self.warm and acts.memory is not None and self.inner is not None:
            # A worker that never saw this session: nothing kept, no embedding kept.
            acts.context_cache = ContextCache(ContextCacheConfig(time_budget_ms=None))
            acts.memory.embedder = CachingEmbedder(self.inner)
        before, cpu = counter.round_trips, time.process_time()
        began = counter.transactions
        started = time.perf_counter()
        out = await self.env.run(
            acts.call_model,
            CallModelInput(
                session_id=self.sid,
                agent_id=AGENT,
                step=self.step,
                seq=self.seq,
                allowed_tools=["http_fetch", "finish"],
                context_messages=CONTEXT,
                fold_tools=["http_fetch"] if self.folded else None,
            ),
        )
        if not self.folded:
            await self.env.run(
                acts.run_tool,
                RunToolInput(
                    session_id=self.sid,
                    agent_id=AGENT,
                    step=self.step,
                    seq=self.seq + 1,
                    model_seq=self.seq,
                    call_index=0,
                ),
            )
        if measured:
            self.wall.append((time.perf_counter() - started) * 1000)
            self.cpu.append((time.process_time() - cpu) * 1000)
            self.round_trips.append(counter.round_trips - before)
            self.transactions.append(counter.transactions - began)
        assert out.tool_calls, "the zero model always calls a tool"
        self.seq, self.step = self.seq + 2, self.step + 1


async def run(args: argparse.Namespace) -> None:
    base = args.database_url or Settings().endpoints().database_url
    if base is None:
        raise SystemExit("no database: pass --database-url or run `vigil stack up`")
    admin = await asyncpg.connect(asyncpg_dsn(base.rsplit("/", 1)[0] + "/postgres"))
    await admin.execute('DROP DATABASE IF EXISTS "vigil_bench_context" WITH (FORCE)')
    await admin.execute('CREATE DATABASE "vigil_bench_context"')
    await admin.close()
    url = base.rsplit("/", 1)[0] + "/vigil_bench_context"
    await asyncio.to_thread(migrate_sync, url)
    engine = make_engine(url, ping_after_idle=WORKER_PING_AFTER_IDLE_SECONDS)  # as the worker's
    sm = make_sessionmaker(engine)
    sids = [f"ctx-{uuid.uuid4()}" for _ in range(4)]
    async with sm.begin() as db:
        for sid in sids:
            await record.create_session(
                db, session_id=sid, agent_id=AGENT, goal="survey the river", status="running"
            )
            await record.append_messages(db, sid, AGENT, _messages(args.messages))
    await _memories(url, args.memories)
    print(f"sessions of {args.messages} messages, {args.memories} memories (hashing embedder)")
    with counting() as counter:
        await _activity_work(sm, url, sids, counter, args)
    await engine.dispose()


async def _activity_work(
    sm: async_sessionmaker[DbSession], url: str, sids: list[str], counter: Counted, args: Any
) -> None:
    memory = MemoryStore(sm, CachingEmbedder(HashingEmbedder(DIM)))
    await _assembly(sm, sids[0], memory, args)

    with tempfile.TemporaryDirectory() as artifacts:
        settings = Settings(database_url=url, artifact_dir=Path(artifacts))
        http = httpx.AsyncClient()
        warm_cache = ContextCache(ContextCacheConfig(time_budget_ms=None))

        def activities() -> TimedActivities:
            return TimedActivities(
                settings=settings,
                sessionmaker=sm,
                store=make_store(settings),
                provider=ZeroModel("bench.invalid", unique_ids=True),
                http=http,
                memory=MemoryStore(sm, CachingEmbedder(HashingEmbedder(DIM))),
                context_cache=warm_cache,
            )

        # Two sessions stepped in turn, so both see the same load on a shared machine.
        cold = Mode(activities(), sids[1], args.messages, warm=False)
        warm = Mode(activities(), sids[2], args.messages, warm=True)
        # As new sessions run a step: the tool folded into the model activity.
        folded = Mode(activities(), sids[3], args.messages, warm=True, folded=True)
        modes = (cold, warm, folded)
        for _ in range(5):  # settle the connection pool and the first summaries
            for mode in modes:
                await mode.one(counter, measured=False)
        for mode in modes:
            mode.acts.assembly_ms.clear()
        for _ in range(args.steps):
            for mode in modes:
                await mode.one(counter)
        print(
            f"(b) activity work per step: call_model (zero-latency model) + run_tool "
            f"(folded: run by call_model), "
            f"context {CONTEXT} messages, {args.steps} steps each"
        )
        for mode in modes:
            label = ("warm" if mode.warm else "cold") + (", folded" if mode.folded else "")
            print(
                f"    {label} cache: wall {_figures(mode.wall)}; this process's CPU "
                f"median {statistics.median(mode.cpu):.2f} ms; "
                f"{statistics.median(mode.round_trips):.0f} round trips to PostgreSQL in "
                f"{statistics.median(mode.transactions):.0f} transactions"
            )
            print(f"      of which context assembly and recall: {_figures(mode.acts.assembly_ms)}")
        stats: dict[str, Any] = warm_cache.stats
        print(f"    warm cache: {stats}; kept {warm_cache.bytes / 1024:.0f} KiB")
        ratio = statistics.median(cold.wall) / statistics.median(warm.wall)
        print(f"    warm median {ratio:.1f}x faster than cold (goal: under 5 ms median warm)")
        await http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
