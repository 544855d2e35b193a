"""SSE fan-out: followers per session, sessions followed at once, delay and database cost.

Prints figures; asserts nothing about time. Runs on the integration tests' stack (started
if needed, on its own database ``vigil_bench_sse``). A real ``vigil api`` process serves
the streams; followers are raw HTTP clients in this process. Messages are written with
the record's own function (``store.append_messages``, acting for the agent, one
transaction each, as the record activity writes them); the migration's trigger notifies,
the API's one feed reads each message once and fans it out.

For each shape (sessions x followers per session) it prints:
- the delay from a message's commit to a follower receiving it, p50 / p99 / max;
- the database connections the API holds while everyone follows (and how many LISTEN);
- the API's transactions on the database per second while messages flow, and per
  message written (the writer's own transactions excluded): with fan-out in memory this
  stays flat as followers grow.

    uv run python -m bench.sse_fanout
    uv run python -m bench.sse_fanout --messages 100 --shapes 1x1,1x100,20x10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from tests.support.cli import CLI, ROOT, cli_env
from tests.support.teststack import scratch_stack
from vigil.activities.record import store as record
from vigil.activities.record.rls import acting_for
from vigil.workers.db import make_sessionmaker
from vigil.workers.settings import Settings, sqlalchemy_url
from vigil.workers.tokens import Scope, TokenService

DEFAULT_SHAPES = "1x1,1x10,1x100,20x1,20x10"
BENCH_APP = "vigil-bench-sse"
STATS_SETTLE = 11.0
"""PostgreSQL flushes a backend's statistics when it goes idle, but at most once a second
and otherwise up to 10 s later: wait that out around the measured window."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Follower:
    """One raw SSE connection; records when each (session, seq) arrived."""

    session_id: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: dict[int, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    async def run(self, port: int, token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"GET /v1/sessions/{self.session_id}/stream?tokens=false HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        kind = ""
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                now = time.perf_counter()
                if line.startswith(b"event: "):
                    kind = line[7:].strip().decode()
                elif line.startswith(b"data: ") and kind == "status":
                    self.ready.set()
                elif line.startswith(b"data: ") and kind == "message":
                    data = json.loads(line[6:])
                    self.arrived[int(data["seq"])] = now
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def counters(db: DbSession) -> tuple[int, int, int]:
    """(transactions committed in this database, backends not ours, the LISTENer among
    them: the connection whose last statement was a LISTEN or UNLISTEN)."""
    commits = (
        await db.execute(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
    ).scalar_one()
    backends, listening = (
        await db.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE query ~* '^\\s*(UN)?LISTEN') "
                "FROM pg_stat_activity WHERE datname = current_database() "
                f"AND application_name <> '{BENCH_APP}'"
            )
        )
    ).one()
    await db.commit()
    return int(commits), int(backends), int(listening)


async def wait_until(probe: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def shape(
    sm: async_sessionmaker[DbSession],
    port: int,
    token: str,
    sessions: int,
    per_session: int,
    messages: int,
    interval: float,
) -> None:
    agent = f"bench-sse-{uuid.uuid4().hex[:6]}"
    ids = [f"{agent}-s{i}" for i in range(sessions)]
    async with sm.begin() as db:
        for sid in ids:
            await record.create_session(
                db, session_id=sid, agent_id=agent, goal="bench", status="running"
            )
    followers = [Follower(sid) for sid in ids for _ in range(per_session)]
    for f in followers:
        f.task = asyncio.create_task(f.run(port, token))
    await asyncio.wait_for(asyncio.gather(*(f.ready.wait() for f in followers)), 120)
    # A first message reaches a follower live only once its catch-up is over: after it,
    # the window below holds live delivery only.
    async with acting_for(sm, agent) as wdb:
        for sid in ids:
            await record.append_messages(
                wdb, sid, agent, [record.NewMessage(seq=0, role="user", content="warm-up")]
            )
    await wait_until(lambda: all(0 in f.arrived for f in followers), within=120)

    await asyncio.sleep(STATS_SETTLE)
    async with sm() as db:
        commits0, _, _ = await counters(db)
        committed: dict[tuple[str, int], float] = {}
        started = time.perf_counter()
        writes = 0

        async def write(sid: str, seq: int) -> None:
            async with acting_for(sm, agent) as wdb:
                await record.append_messages(
                    wdb, sid, agent, [record.NewMessage(seq=seq, role="assistant", content="x")]
                )
            committed[(sid, seq)] = time.perf_counter()

        for seq in range(1, messages + 1):
            await asyncio.gather(*(write(sid, seq) for sid in ids))
            writes += len(ids)
            await asyncio.sleep(interval)
        done = await wait_until(
            lambda: all(len(f.arrived) > messages for f in followers), within=120
        )
        elapsed = time.perf_counter() - started
        _, backends, listening = await counters(db)
        await asyncio.sleep(STATS_SETTLE)
        commits1, _, _ = await counters(db)
    for f in followers:
        if f.task is not None:
            f.task.cancel()
    await asyncio.gather(*(f.task for f in followers if f.task), return_exceptions=True)

    delays = [
        (at - committed[(f.session_id, seq)]) * 1000
        for f in followers
        for seq, at in f.arrived.items()
        if seq > 0 and (f.session_id, seq) in committed
    ]
    # Ours: one per write, and the two counters() reads that end the window.
    api_tx = max(0, commits1 - commits0 - writes - 2)
    print(
        f"{sessions:>3} sessions x {per_session:>3} followers = {len(followers):>4} streams | "
        f"delay p50 {statistics.median(delays):6.1f} ms  p99 {pct(delays, 0.99):6.1f} ms  "
        f"max {max(delays):6.1f} ms | API db conns {backends} ({listening} LISTEN) | "
        f"API tx {api_tx / elapsed:6.1f}/s, {api_tx / max(1, writes):.2f} per message"
        + ("" if done else "  (INCOMPLETE: not every follower got every message)")
    )


@contextlib.contextmanager
def api_process(settings: Settings, port: int) -> Iterator[None]:
    """`vigil api` on ``port`` as its own process (its own CPU, as in production)."""
    url = settings.endpoints().database_url
    assert url is not None
    env = cli_env(
        database_url=url,
        state_dir=settings.resolved_state_dir,
        task_queue="bench-sse",
        model_url="http://127.0.0.1:9/v1",
        artifact_dir=Path(settings.resolved_state_dir) / "bench-sse-artifacts",
        VIGIL_API_PORT=str(port),
        VIGIL_LOG_LEVEL="WARNING",
        # One token follows every stream of a shape (up to 200 here): the bounds let it.
        VIGIL_API_MAX_STREAMS_PER_TOKEN="1000",
        VIGIL_API_MAX_STREAMS="1000",
    )
    server = subprocess.Popen([*CLI, "api"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the API did not start")
        yield
    finally:
        server.terminate()
        server.wait(30)


async def bench(settings: Settings, args: argparse.Namespace, port: int) -> None:
    url = settings.endpoints().database_url
    assert url is not None
    # Our own connections are named, so the count of the API's leaves them out.
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=8,
        connect_args={"server_settings": {"application_name": BENCH_APP}},
    )
    sm = make_sessionmaker(engine)
    try:
        token = (await TokenService(sm).create("bench", scope=Scope.READ)).token
        print(
            f"SSE fan-out: {args.messages} messages per session, one every "
            f"{args.interval * 1000:.0f} ms, {os.cpu_count()} CPUs (shared: figures are noisy)"
        )
        for item in args.shapes.split(","):
            sessions, per_session = (int(x) for x in item.split("x"))
            await shape(sm, port, token, sessions, per_session, args.messages, args.interval)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50, help="messages per session")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between rounds")
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="SESSIONSxFOLLOWERS,...")
    args = parser.parse_args(argv)
    port = free_port()
    with scratch_stack("vigil_bench_sse") as settings, api_process(settings, port):
        asyncio.run(bench(settings, args, port))


if __name__ == "__main__":
    sys.exit(main())
