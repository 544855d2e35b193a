"""PostgreSQL restarts in the middle of a stream of appends: no seq lost, none doubled.

The writer appends batches at consecutive seqs, each batch one transaction wrapped in
``with_db_retry``. A thread stops the test stack's PostgreSQL (fast shutdown: sessions
are killed mid-transaction) and starts it again on the same port and data. A batch whose
commit landed but whose acknowledgement was lost is simply appended again, and the
(session_id, seq) key makes that a no-op.

The server is shared by the whole test run, so it is brought back whatever happens.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.retry import is_transient_db_error, with_db_retry
from vigil.activities.record.store import NewMessage, append_messages, create_session
from vigil.workers.stack import Stack

# Stops a part of the shared test stack: runs alone, after the parallel phase.
pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

TOTAL = 600
BATCH = 5
RESTART_AFTER = 150


def _ensure_up(stack: Stack) -> None:
    if not stack.postgres.ready():
        stack.postgres.start(print)


async def test_appends_survive_a_database_restart_without_gap_or_duplicate(
    stack: Stack, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")

    reached = threading.Event()
    restarted = threading.Event()
    failures: list[BaseException] = []

    def restart() -> None:
        try:
            if not reached.wait(60):
                raise TimeoutError("the writer never reached the restart point")
            stack.postgres.stop()
            time.sleep(1.0)  # writers meet a refused connection, not just a dropped one
            stack.postgres.start(print)
        except BaseException as exc:
            failures.append(exc)
        finally:
            restarted.set()

    retries: list[BaseException] = []
    attempts_per_batch: list[int] = []

    async def append_batch(first: int) -> int:
        attempts_per_batch[-1] += 1
        async with sessionmaker() as db, db.begin():
            inserted = await append_messages(
                db,
                session,
                agent,
                [
                    NewMessage(seq=s, role="user", content=f"message {s}")
                    for s in range(first, first + BATCH)
                ],
            )
            if reached.is_set():
                # Hold the transaction open a moment, as an activity doing work would,
                # so the shutdown also kills connections in the middle of one.
                await asyncio.sleep(0.02)
            return inserted

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    try:
        for first in range(0, TOTAL, BATCH):
            if first >= RESTART_AFTER:
                reached.set()
            attempts_per_batch.append(0)
            await with_db_retry(
                lambda first=first: append_batch(first),  # type: ignore[misc]
                attempts=80,
                base_delay=0.05,
                max_delay=0.5,
                on_retry=lambda _n, exc: retries.append(exc),
            )
            if first >= RESTART_AFTER:
                # Pace the writer so the stop surely lands mid-stream (it takes ~0.1 s).
                await asyncio.sleep(0.005)
        await asyncio.to_thread(restarter.join, 120)
    finally:
        reached.set()
        await asyncio.to_thread(restarter.join, 120)
        _ensure_up(stack)
    assert not failures, failures
    assert restarted.is_set()
    assert retries, "the restart never hit the writer: the test proved nothing"
    assert all(is_transient_db_error(exc) for exc in retries)

    async def check() -> tuple[int, int, int, int, int]:
        async with sessionmaker() as db:
            row = (
                await db.execute(
                    text(
                        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq), "
                        "count(*) FILTER (WHERE content <> 'message ' || seq) "
                        "FROM messages WHERE session_id = :s"
                    ),
                    {"s": session},
                )
            ).one()
        return tuple(int(v) for v in row)  # type: ignore[return-value]

    # The ambiguous case spelled out: a batch that did commit is sent again, as after a
    # lost acknowledgement; the key makes it a no-op.
    attempts_per_batch.append(0)
    assert await with_db_retry(lambda: append_batch(RESTART_AFTER), attempts=20) == 0

    count, distinct, low, high, wrong = await with_db_retry(check, attempts=20)
    assert (count, distinct, low, high, wrong) == (TOTAL, TOTAL, 0, TOTAL - 1, 0)
    async with sessionmaker() as db:
        gaps = (
            await db.execute(
                text(
                    "SELECT g FROM generate_series(0, :n - 1) g EXCEPT "
                    "SELECT seq FROM messages WHERE session_id = :s"
                ),
                {"n": TOTAL, "s": session},
            )
        ).all()
    assert gaps == []
    kinds = sorted({type(exc).__name__ for exc in retries})
    print(
        f"\n{len(retries)} retried attempts across the restart ({', '.join(kinds)}); "
        f"max attempts for one batch: {max(attempts_per_batch)}"
    )


async def test_only_connection_failures_are_retried(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    calls = 0

    async def violates_a_constraint() -> None:
        nonlocal calls
        calls += 1
        async with sessionmaker() as db, db.begin():
            await db.execute(text("INSERT INTO agents (id, name) VALUES (NULL, 'x')"))

    with pytest.raises(IntegrityError):
        await with_db_retry(violates_a_constraint, attempts=5, base_delay=0.01)
    assert calls == 1

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError(111, "Connection refused")

    calls = 0
    with pytest.raises(ConnectionRefusedError):
        await with_db_retry(refused, attempts=3, base_delay=0.01)
    assert calls == 3
