"""A worker's warm-up is best effort: when it runs past its bound (``VIGIL_WARM_UP_SECONDS``)
or fails (an embedder that refuses connections), the worker still starts polling and
serves sessions; its log says the warm-up was skipped and why.

With the embedder down, a session's model calls wait for it (they retry), so that
session is served up to its first model call and then cancelled: the worker answers its
state query and records the cancel.

Before it polls, a worker moves its start-up objects out of the garbage collector's
scans (``VIGIL_WORKER_GC_FREEZE``, on by default) and says how many in its log."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from tests.support.cli import WorkerProcess, cli_env
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import eventually, session_input, start, until
from vigil.activities.record import store as record
from vigil.schema.payloads import SessionStatus
from vigil.workers.db import make_engine, make_sessionmaker, migrate_sync
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration


def _refused_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated and holding no memories: a worker may use another
    embedder on it (the shared one holds the hashing embedder's vectors)."""
    server, name = database_url.rsplit("/", 1)[0], f"vigil_warm_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server + "/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')
    url = f"{server}/{name}"
    await asyncio.to_thread(migrate_sync, url)
    try:
        yield url
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _serves_a_session(
    stack: Stack,
    database_url: str,
    client: Client,
    tmp_path: Path,
    *,
    cancel: bool = False,
    **extra: str,
) -> str:
    """Start a `vigil worker` with ``extra`` settings, run one session on it to its end
    in the record (completed; ``cancel``: cancelled once the worker answers its state
    query), stop the worker; its log."""
    task_queue = f"tq-warm-{uuid.uuid4()}"
    with LLMStub() as stub:
        stub.enqueue(Reply.tool_call("finish", {"summary": "served cold"}))
        env = cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=task_queue,
            model_url=stub.url_openai,
            artifact_dir=tmp_path / "artifacts",
            **extra,
        )
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        engine = make_engine(database_url, pool_size=1)
        try:
            handle = await start(client, task_queue, session_input("serve one session"))
            if cancel:
                state = await eventually(handle, lambda s: s.step == 0)
                assert state.status == SessionStatus.RUNNING
                await handle.cancel()
            status = "cancelled" if cancel else "completed"

            async def ended() -> bool:
                async with make_sessionmaker(engine)() as db:
                    row = await record.get_session(db, handle.id)
                return row is not None and row.status == status

            await until(ended, 60, f"the session {status} on the cold worker")
        finally:
            code = worker.stop()
            await engine.dispose()
        log = worker.log()
    assert code == 0, log[-3000:]
    return log


async def test_a_warm_up_past_its_bound_leaves_the_worker_serving(
    stack: Stack, database_url: str, client: Client, tmp_path: Path
) -> None:
    # No warm-up of a real database ends within a millisecond.
    log = await _serves_a_session(
        stack, database_url, client, tmp_path, VIGIL_WARM_UP_SECONDS="0.001"
    )
    skipped = [line for line in log.splitlines() if "warm_up_skipped" in line]
    assert skipped and "TimeoutError" in skipped[0], log[-3000:]
    assert "warmed up" not in log


async def test_a_failing_warm_up_leaves_the_worker_serving(
    stack: Stack, empty_database: str, client: Client, tmp_path: Path
) -> None:
    log = await _serves_a_session(
        stack,
        empty_database,
        client,
        tmp_path,
        VIGIL_EMBEDDER="openai",
        VIGIL_EMBEDDING_BASE_URL=f"http://127.0.0.1:{_refused_port()}/v1",
        cancel=True,
    )
    skipped = [line for line in log.splitlines() if "warm_up_skipped" in line]
    assert skipped and "EmbeddingError" in skipped[0], log[-3000:]
    assert "warmed up" not in log


def _frozen(log: str) -> int:
    [polling] = [line for line in log.splitlines() if "worker polling" in line]
    match = re.search(r"gc_frozen=(\d+)", polling)
    assert match, polling
    return int(match.group(1))


async def test_a_worker_freezes_its_start_up_objects_unless_told_not_to(
    stack: Stack, database_url: str, client: Client, tmp_path: Path
) -> None:
    for name in ("frozen", "kept"):
        (tmp_path / name).mkdir()
    # Frozen: the modules, clients and caches of a started worker, out of every scan.
    frozen = await _serves_a_session(stack, database_url, client, tmp_path / "frozen")
    assert _frozen(frozen) > 50_000, frozen[-3000:]
    kept = await _serves_a_session(
        stack, database_url, client, tmp_path / "kept", VIGIL_WORKER_GC_FREEZE="false"
    )
    assert _frozen(kept) == 0, kept[-3000:]
