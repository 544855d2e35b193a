"""Workers killed with SIGKILL mid-session: another worker finishes, every row exactly once.

The worker runs as a real OS process (``tests.support.worker_proc``); the LLM stub runs
here and answers each model call after a short hang, so a kill lands while ``call_model``
is running. Each lost attempt is noticed by its heartbeat timeout (2 s) and retried on the
next worker. The record in PostgreSQL is then checked by SQL.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.history import activity_runs
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, start, stub_settings
from tests.support.worker_proc import WorkerProcess
from vigil.schema import names
from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

STEPS = 15
KILLS = 4
HANG = 0.6
"""Seconds each model reply takes: the window in which a kill lands mid-activity."""
USAGE = (100, 7)
CALLS_PER_STEP = 2


def _responder(stub: LLMStub) -> Any:
    """Step n (known from the assistant turns the model was shown) calls two tools; the
    last step finishes. Retried calls of the same step get the same answer."""

    def answer(body: Any) -> Reply:
        step = 1 + sum(1 for m in body["messages"] if m["role"] == "assistant")
        if step >= STEPS:
            reply = Reply.tool_call("finish", {"summary": "all steps done"}, usage=USAGE)
        else:
            reply = Reply.tool_calls(
                *[
                    ("http_fetch", {"url": f"{stub.url}/step/{step}/{i}"})
                    for i in range(CALLS_PER_STEP)
                ],
                usage=USAGE,
            )
        return Reply.hang(HANG, then=reply)

    return answer


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub() as s:
        s.default = _responder(s)
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
        "VIGIL_MODEL_TIMEOUT_SECONDS": "10",
        "VIGIL_HTTP_ALLOW": stub.host_port,
        "VIGIL_ARTIFACT_BACKEND": "fs",
        "VIGIL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "VIGIL_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "workers.log"
    spawned: list[WorkerProcess] = []

    async def spawn() -> WorkerProcess:
        worker = await WorkerProcess.spawn(env, log)
        spawned.append(worker)
        return worker

    yield spawn
    for worker in spawned:
        await worker.stop()


async def _wait_for_request(stub: LLMStub, after: int) -> None:
    """Until the stub has received more than ``after`` model requests."""
    async with asyncio.timeout(60):
        while True:  # the stub answers in its own threads: poll
            if len(stub.requests) > after:
                return
            await asyncio.sleep(0.01)


async def test_sigkilled_workers_leave_every_row_exactly_once(
    client: Client,
    stub: LLMStub,
    task_queue: str,
    workers: Any,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    why = f"(random seed {seed})"

    worker = await workers()
    handle = await start(
        client,
        task_queue,
        StartSessionInput(
            agent_id="agent-crash",
            goal="survive kills",
            policy=ToolPolicy(require_approval=[]),
            budget=Budget(max_steps=STEPS + 5),
            heartbeat_seconds=2,
            context_messages=200,
        ),
    )
    seen = 0
    for _ in range(KILLS):
        # Let the session move on by one to three model calls, then kill inside the last.
        await _wait_for_request(stub, seen + rng.randint(0, 2))
        seen = len(stub.requests)
        await asyncio.sleep(rng.uniform(0.05, HANG - 0.1))
        assert seen == len(stub.requests), "the kill should land inside one model call"
        await worker.sigkill()
        worker = await workers()
    result = await asyncio.wait_for(handle.result(), timeout=180)

    assert result.status == SessionStatus.COMPLETED, why
    assert result.steps == STEPS, why
    assert result.summary == "all steps done"
    # Each kill cost exactly one model attempt, retried on the next worker.
    model_attempts = [r.attempt for r in await activity_runs(handle, names.ACT_CALL_MODEL)]
    assert len(model_attempts) == STEPS, why
    assert sum(a - 1 for a in model_attempts) == KILLS, f"{model_attempts} {why}"
    assert len(stub.requests) == STEPS + KILLS, why

    sid = handle.id
    async with sessionmaker() as db:

        async def rows(sql: str) -> list[Any]:
            return list((await db.execute(text(sql), {"s": sid})).all())

        # The database itself refuses a second row at the same seq.
        unique = await rows(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'messages'::regclass AND contype = 'u'"
        )
        assert ("UNIQUE (session_id, seq)",) in unique

        # Messages: seq 0..N, contiguous, no duplicates.
        count, distinct, low, high = (
            await rows(
                "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM messages "
                "WHERE session_id = :s"
            )
        )[0]
        assert low == 0 and count == distinct == high + 1, (count, distinct, low, high, why)
        # goal + per step (assistant + tool results) + the final system note.
        assert count == 1 + (STEPS - 1) * (1 + CALLS_PER_STEP) + 2 + 1, why

        # Exactly one model_call event per step, nothing else.
        model_events = await rows(
            "SELECT key, step, count(*) FROM events WHERE session_id = :s "
            "AND kind = 'model_call' GROUP BY key, step ORDER BY step"
        )
        assert model_events == [(f"model:{n}", n, 1) for n in range(1, STEPS + 1)], why

        # Every assistant tool call: one tool_call event (tools run by an activity) and
        # exactly one tool result message answering it.
        calls = await rows(
            "SELECT m.step, c.ordinality - 1, c.value->>'id', c.value->>'name' "
            "FROM messages m, jsonb_array_elements(m.tool_calls) WITH ORDINALITY c "
            "WHERE m.session_id = :s AND m.role = 'assistant' ORDER BY m.seq, c.ordinality"
        )
        assert len(calls) == (STEPS - 1) * CALLS_PER_STEP + 1, why
        tool_events = {
            (key, call_id): n
            for key, call_id, n in await rows(
                "SELECT key, payload->>'call_id', count(*) FROM events WHERE session_id = :s "
                "AND kind = 'tool_call' GROUP BY key, payload->>'call_id'"
            )
        }
        results = dict(
            await rows(
                "SELECT tool_call_id, count(*) FROM messages WHERE session_id = :s "
                "AND role = 'tool' GROUP BY tool_call_id"
            )
        )
        expected_events = {
            (f"tool:{step}:{index}", call_id): 1
            for step, index, call_id, name in calls
            if name != "finish"
        }
        assert tool_events == expected_events, why
        assert results == {call_id: 1 for _, _, call_id, _ in calls}, why

        # Usage counted once per step, however many attempts the model call took.
        tokens_in, tokens_out, summed_in, summed_out = (
            await rows(
                "SELECT s.tokens_in, s.tokens_out, "
                "(SELECT sum((payload->>'tokens_in')::bigint) FROM events "
                " WHERE session_id = :s AND kind = 'model_call'), "
                "(SELECT sum((payload->>'tokens_out')::bigint) FROM events "
                " WHERE session_id = :s AND kind = 'model_call') "
                "FROM sessions s WHERE s.id = :s"
            )
        )[0]
        assert tokens_in == summed_in == STEPS * USAGE[0] == result.tokens_in, why
        assert tokens_out == summed_out == STEPS * USAGE[1] == result.tokens_out, why
        status, step = (await rows("SELECT status, step FROM sessions WHERE id = :s"))[0]
        assert (status, step) == ("completed", STEPS)


async def test_a_healthy_worker_is_not_taken_for_a_lost_one(
    client: Client, settings: Settings, task_queue: str
) -> None:
    """A model call longer than the heartbeat timeout must still run once on a live worker."""
    with LLMStub() as slow:
        slow.enqueue(Reply.hang(4.0, then=Reply.tool_call("finish", {"summary": "one slow call"})))
        slow.default = lambda body: Reply.tool_call("finish", {"summary": "called again"})
        cfg = stub_settings(settings, slow.url_openai, model_timeout_seconds=10.0)
        async with running_worker(client, cfg, task_queue):
            handle = await start(
                client,
                task_queue,
                StartSessionInput(agent_id="agent-slow", goal="think slowly", heartbeat_seconds=1),
            )
            result = await asyncio.wait_for(handle.result(), timeout=60)
        runs = await activity_runs(handle, names.ACT_CALL_MODEL)
        assert [r.attempt for r in runs] == [1], runs
        assert len(slow.requests) == 1
        assert (result.status, result.summary) == (SessionStatus.COMPLETED, "one slow call")
