"""Context-assembly latency: what one model call spends packing its context.

Prints figures; asserts nothing. A session of N messages (tool exchanges with long tool
output), an agent with M memories (hashing embedder), a few artifacts; then the model
activity's assembly (recent window in a token budget, running summary, recall, artifact
references) is timed over repeated calls, first call (writes the summary) apart.

    uv run python -m bench.context_assembly --database-url postgresql://... --messages 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg

from vigil.activities.context import ContextBudget, assemble
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record
from vigil.workers.db import make_engine, make_sessionmaker, migrate_sync
from vigil.workers.settings import Settings, asyncpg_dsn


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
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    sid, agent = f"ctx-{uuid.uuid4()}", "agent-ctx"
    async with sm.begin() as db:
        await record.create_session(
            db, session_id=sid, agent_id=agent, goal="survey the river", status="running"
        )
        msgs = []
        for seq in range(args.messages):
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
        await record.append_messages(db, sid, agent, msgs)  # fmt: skip
    memory = MemoryStore(sm, HashingEmbedder())
    for i in range(args.memories):
        await memory.add(agent, f"gauge {i % 50} sits {i} m from bridge {i % 7}", kind="fact")
    budget = ContextBudget(total_tokens=args.tokens)
    started = time.perf_counter()
    first = await assemble(sm, session_id=sid, agent_id=agent, budget=budget, memory=memory)
    first_ms = (time.perf_counter() - started) * 1000
    times = []
    for _ in range(args.calls):
        started = time.perf_counter()
        got = await assemble(sm, session_id=sid, agent_id=agent, budget=budget, memory=memory)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"session of {args.messages} messages, {args.memories} memories, budget {args.tokens}")
    print(f"first call (summarises {first.summary_upto_seq} older turns): {first_ms:.1f} ms")
    sent = f"{len(got.messages)} messages, ~{got.tokens} tokens sent"
    print(f"later calls: p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms ({sent})")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--calls", type=int, default=100)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
