"""Workers SIGKILLed inside a folded step, inside a local model call, inside a step batch
(either mode) and inside a low-latency session's opening: another worker finishes the
session and every row is there exactly once.

Workers are real OS processes (``tests.support.worker_proc``); the LLM stub and the page
the tools fetch run here and hold their answer, and the test holds a row the opening
waits for, so each kill lands where it is meant to: inside a tool call that
``call_model`` runs itself, inside a model call that runs as a local activity
(``[model] execution = "local"``), or inside that mode's opening of the session, which
rides with the first model call (a local activity too).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.history import activity_runs, local_activities
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import assert_whole, local_agent, start, transcript, until
from tests.support.worker_proc import WorkerProcess
from vigil.activities.record import store as record
from vigil.schema import names
from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

STEPS = 3
CALLS = 2
PAGE_HOLD = 1.0
"""Seconds each fetched page takes: the window in which a kill lands inside a tool."""


class Pages:
    """The fetched pages' log, filled by the stub's GET hook (its own threads)."""

    def __init__(self, hold: float = PAGE_HOLD) -> None:
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.hold = hold

    def hook(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)
        time.sleep(self.hold)

    def count(self) -> int:
        with self.lock:
            return len(self.paths)


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub() as s:
        yield s


@pytest.fixture
async def workers(
    settings: Settings, database_url: str, task_queue: str, stub: LLMStub, tmp_path: Path
) -> AsyncIterator[Any]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": settings.endpoints().temporal_address,
        "VIGIL_STATE_DIR": str(settings.state_dir),
        "VIGIL_TASK_QUEUE": task_queue,
        "VIGIL_MODEL_PROVIDER": "openai",
        "VIGIL_MODEL_BASE_URL": stub.url_openai,
        "VIGIL_MODEL_NAME": "stub-model",
        "VIGIL_MODEL_TIMEOUT_SECONDS": "30",
        "VIGIL_HTTP_ALLOW": stub.host_port,
        "VIGIL_ARTIFACT_BACKEND": "fs",
        "VIGIL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "VIGIL_LOG_LEVEL": "WARNING",
    }
    spawned: list[WorkerProcess] = []

    async def spawn() -> WorkerProcess:
        worker = await WorkerProcess.spawn(env, tmp_path / "workers.log")
        spawned.append(worker)
        return worker

    yield spawn
    for worker in spawned:
        await worker.stop()


def _fetches(stub: LLMStub, step: int) -> Reply:
    return Reply.tool_calls(
        *[("http_fetch", {"url": f"{stub.url}/step/{step}/{i}"}) for i in range(CALLS)]
    )


async def _rows(
    sessionmaker: async_sessionmaker[DbSession], sql: str, sid: str
) -> list[tuple[Any, ...]]:
    async with sessionmaker() as db:
        return [tuple(r) for r in (await db.execute(text(sql), {"s": sid})).all()]


async def _waiting_on(
    sessionmaker: async_sessionmaker[DbSession], holder: DbSession
) -> Callable[[], Awaitable[list[tuple[Any, ...]] | None]]:
    """A check for ``until``: the backends waiting on a lock ``holder``'s transaction
    holds (None while there are none)."""
    me = int((await holder.execute(text("SELECT pg_backend_pid()"))).scalar_one())

    async def waiting() -> list[tuple[Any, ...]] | None:
        blocked = (
            f"SELECT pid FROM pg_stat_activity WHERE {me} = ANY(pg_blocking_pids(pid)) AND :s = :s"
        )
        return await _rows(sessionmaker, blocked, "") or None

    return waiting


async def _assert_once(
    sessionmaker: async_sessionmaker[DbSession], sid: str, tool_steps: int
) -> None:
    """A whole transcript; one model_call event per step, one tool_call event and one
    result per tool call."""
    messages = await transcript(sessionmaker, sid)
    assert_whole(messages)
    assistant = [m for m in messages if m.role == "assistant"]
    assert [m.step for m in assistant] == list(range(1, STEPS + 1))
    model_events = await _rows(
        sessionmaker,
        "SELECT key, count(*) FROM events WHERE session_id = :s AND kind = 'model_call' "
        "GROUP BY key ORDER BY key",
        sid,
    )
    assert model_events == [(f"model:{n}", 1) for n in range(1, STEPS + 1)]
    tool_events = await _rows(
        sessionmaker,
        "SELECT key, count(*) FROM events WHERE session_id = :s AND kind = 'tool_call' "
        "GROUP BY key ORDER BY key",
        sid,
    )
    expected = [(f"tool:{s}:{i}", 1) for s in range(1, tool_steps + 1) for i in range(CALLS)]
    assert tool_events == expected
    results = [m.tool_call_id for m in messages if m.role == "tool"]
    assert len(results) == len(set(results)) == tool_steps * CALLS + 1


async def test_a_worker_killed_inside_a_folded_tool_call(
    client: Client,
    stub: LLMStub,
    task_queue: str,
    workers: Any,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    pages = Pages()
    stub.on_get = pages.hook
    stub.enqueue(*[_fetches(stub, n) for n in range(1, STEPS)])
    stub.enqueue(Reply.tool_call("finish", {"summary": "fetched"}))
    worker = await workers()
    handle = await start(
        client,
        task_queue,
        StartSessionInput(
            agent_id="agent-fold-crash",
            goal="fetch while dying",
            policy=ToolPolicy(require_approval=[]),
            budget=Budget(max_steps=STEPS + 2),
            heartbeat_seconds=2,
        ),
    )
    # Kill inside the first call of step 1, then inside the second call of step 2.
    for fetched in (1, 2 + CALLS):
        await until(lambda n=fetched: pages.count() >= n or None, within=60)  # type: ignore[misc]
        await worker.sigkill()
        worker = await workers()
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, STEPS)

    runs = await activity_runs(handle)
    assert names.ACT_RUN_TOOL not in [r.name for r in runs]
    # Each killed step retried its model activity once, which returned the recorded reply:
    # the model was asked once per step.
    model_attempts = [r.attempt for r in runs if r.name == names.ACT_CALL_MODEL]
    assert model_attempts == [2, 2, 1], model_attempts
    assert len(stub.requests) == STEPS
    await _assert_once(sessionmaker, handle.id, STEPS - 1)


async def _local_agent(sessionmaker: async_sessionmaker[DbSession]) -> str:
    tools = [{"name": "http_fetch", "approval": "never"}, {"name": "finish"}]
    return await local_agent(sessionmaker, tools, budget={"max_steps": STEPS + 2})


async def _scheduled(handle: Any) -> list[str]:
    """The activities the session dispatched through the server, in order."""
    history = await handle.fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]


async def test_a_worker_killed_inside_a_local_model_call(
    client: Client,
    stub: LLMStub,
    task_queue: str,
    workers: Any,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    name = await _local_agent(sessionmaker)
    held = Reply.hang(2.0, then=_fetches(stub, 1))
    stub.enqueue(held, _fetches(stub, 1), _fetches(stub, 2))
    stub.enqueue(Reply.tool_call("finish", {"summary": "fetched"}))
    worker = await workers()
    handle = await start(client, task_queue, StartSessionInput(agent_id=name, goal="think, die"))
    await until(lambda: len(stub.requests) >= 1 or None, within=60)
    await worker.sigkill()  # the stub still holds the reply: nothing was recorded
    worker = await workers()
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, STEPS)

    # The model call ran again on the new worker: asked twice, recorded once.
    assert len(stub.requests) == STEPS + 1
    # The agent's definition, model calls, records and the outcome's memory all ran as
    # local activities: nothing went through the server's activity queue.
    assert await _scheduled(handle) == []
    await _assert_once(sessionmaker, handle.id, STEPS - 1)
    remembered = await _rows(
        sessionmaker, "SELECT kind FROM memories WHERE source_session_id = :s", handle.id
    )
    assert remembered == [("reflection",)]


@pytest.mark.parametrize("execution", ["local", "activity"])
async def test_a_worker_killed_inside_a_step_batch(
    client: Client,
    stub: LLMStub,
    task_queue: str,
    workers: Any,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # One model call takes step 1 (two fetches) and goes on to step 2, whose model call
    # the stub holds: the worker is killed there. The next worker runs the call again from
    # the batch's first step: step 1 comes back from the record (its reply and results
    # as written: the model is not asked, no page fetched again), step 2 is asked again.
    # A local call is run again once the workflow task times out; a regular activity (the
    # default mode) once its heartbeat does, as its next attempt.
    pages = Pages(hold=0.05)  # quick: the batch's window must hold steps 1 to 3 after the kill
    stub.on_get = pages.hook
    tools = [{"name": "http_fetch", "approval": "never"}, {"name": "finish"}]
    name = await local_agent(
        sessionmaker,
        tools,
        budget={"max_steps": STEPS + 2},
        model={"execution": execution, "batch_ms": 5_000},
    )
    held = Reply.hang(30.0, then=_fetches(stub, 2))
    stub.enqueue(_fetches(stub, 1), held, _fetches(stub, 2))
    stub.enqueue(Reply.tool_call("finish", {"summary": "fetched"}))
    worker = await workers()
    arg = StartSessionInput(agent_id=name, goal="batch, die", heartbeat_seconds=2)
    handle = await start(client, task_queue, arg)
    await until(lambda: len(stub.requests) >= 2 or None, within=60)
    assert pages.count() == CALLS  # step 1 whole before step 2 was asked
    await worker.sigkill()
    worker = await workers()
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, STEPS)

    assert len(stub.requests) == STEPS + 1  # step 2 twice, the others once
    assert pages.count() == 2 * CALLS
    if execution == "local":
        assert await _scheduled(handle) == []
        # The killed call left no marker; the next took the three steps in one.
        assert await local_activities(handle, names.ACT_CALL_MODEL) == 1
    else:
        # One model activity for the three steps: its first attempt killed, its second
        # whole.
        runs = await activity_runs(handle)
        assert [(r.name, r.attempt) for r in runs] == [(names.ACT_CALL_MODEL, 2)]
    await _assert_once(sessionmaker, handle.id, STEPS - 1)


async def test_a_worker_killed_while_a_low_latency_session_opens(
    client: Client,
    stub: LLMStub,
    task_queue: str,
    workers: Any,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    name = await _local_agent(sessionmaker)
    stub.enqueue(*[_fetches(stub, n) for n in range(1, STEPS)])
    stub.enqueue(Reply.tool_call("finish", {"summary": "fetched"}))
    sid = f"open-crash-{uuid.uuid4()}"
    worker = await workers()
    # An uncommitted row with the session's id: the opening's INSERT waits on it.
    async with sessionmaker() as holder:
        await record.create_session(
            holder, session_id=sid, agent_id=name, goal="held", status="running"
        )
        opening_waits = await _waiting_on(sessionmaker, holder)
        handle = await start(
            client, task_queue, StartSessionInput(agent_id=name, goal="open, die"), sid
        )
        await until(opening_waits, within=60, what="the opening to wait on the held row")
        await worker.sigkill()  # inside the local activity that opens the session
        worker = await workers()
        await holder.rollback()
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, STEPS)

    assert await _scheduled(handle) == []
    await _assert_once(sessionmaker, handle.id, STEPS - 1)
    [(goal,)] = await _rows(sessionmaker, "SELECT goal FROM sessions WHERE id = :s", sid)
    assert goal == "open, die"  # opened by the second worker, not the held row


async def test_a_worker_killed_after_a_low_latency_session_recorded_its_end(
    client: Client,
    stub: LLMStub,
    task_queue: str,
    workers: Any,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """The ending is in the record, the workflow task that decided it is not: the next
    worker runs the step's local model call again, finds the reply and the finish answered
    in the record, and must end the session there, not take a step past its recorded end."""
    name = await _local_agent(sessionmaker)
    stub.enqueue(Reply.tool_call("finish", {"summary": "done at once"}))
    stub.enqueue(Reply.tool_call("finish", {"summary": "a step past the end"}))
    sid = f"end-crash-{uuid.uuid4()}"
    worker = await workers()
    # The outcome's memory is written last, with the ending's records: inserts into the
    # memories table wait on this lock, so the kill lands after the ending is recorded and
    # before the workflow task that holds it completes.
    async with sessionmaker() as holder:
        await holder.execute(text("LOCK TABLE memories IN SHARE ROW EXCLUSIVE MODE"))
        memory_waits = await _waiting_on(sessionmaker, holder)
        handle = await start(
            client, task_queue, StartSessionInput(agent_id=name, goal="finish, die"), sid
        )
        await until(memory_waits, within=60, what="the outcome's memory to wait on the lock")
        [(status,)] = await _rows(sessionmaker, "SELECT status FROM sessions WHERE id = :s", sid)
        assert status == "completed"  # the ending is recorded already
        await worker.sigkill()
        worker = await workers()
        await holder.rollback()
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert (result.status, result.steps, result.summary) == (
        SessionStatus.COMPLETED,
        1,
        "done at once",
    )
    assert len(stub.requests) == 1  # the repeated call found its reply: nothing asked
    messages = await transcript(sessionmaker, sid)
    assert_whole(messages)
    # One reply, its finish answered, one ending: nothing past the end.
    assert [(m.role, m.step) for m in messages] == [
        ("user", 0),
        ("assistant", 1),
        ("tool", 1),
        ("system", 1),
    ]
    remembered = await _rows(
        sessionmaker, "SELECT kind FROM memories WHERE source_session_id = :s", sid
    )
    assert remembered == [("reflection",)]
