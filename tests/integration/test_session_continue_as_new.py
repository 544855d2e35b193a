"""A long session continues-as-new under the same id; its record in PostgreSQL stays whole."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    transcript,
    until,
    user_texts,
)
from vigil.schema import names
from vigil.schema.payloads import (
    Ack,
    ApproveInput,
    MessageInput,
    PauseInput,
    ResumeInput,
    SessionResult,
    SessionStatus,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _note(n: int) -> Reply:
    return Reply.tool_call("write_artifact", {"name": f"note-{n}.txt", "content": f"n{n}"})


async def _runs(client: Client, session_id: str) -> list[WorkflowExecutionStatus | None]:
    return [wf.status async for wf in client.list_workflows(f"WorkflowId = '{session_id}'")]


async def test_ten_steps_three_per_run(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # Steps 1..9 write a note (two calls in step 5), step 10 finishes.
    replies = [_note(n) for n in range(1, 10)]
    replies[4] = Reply.tool_calls(
        ("write_artifact", {"name": "a.txt", "content": "a"}),
        ("write_artifact", {"name": "b.txt", "content": "b"}),
    )
    stub.enqueue(*replies, Reply.tool_call("finish", {"summary": "ten steps"}))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("ten steps", steps_per_run=3))
        result: SessionResult = await handle.result()
        st = await eventually(handle, lambda s: s.status == SessionStatus.COMPLETED)

    assert result.status == SessionStatus.COMPLETED and result.steps == 10
    # Continue-as-new after steps 3, 6 and 9: four runs under one id.
    assert result.runs == 4 and st.run_index == 4
    statuses = await until(
        lambda: _at_least_runs(client, handle.id, 4), what="four runs in visibility"
    )
    assert statuses.count(WorkflowExecutionStatus.CONTINUED_AS_NEW) == 3
    assert statuses.count(WorkflowExecutionStatus.COMPLETED) == 1
    row = await session_row(sessionmaker, handle.id)
    assert (row.run_count, row.step, row.status) == (4, 10, "completed")

    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert len(messages) == 1 + 10 + 11 + 1  # goal, replies, results, final
    assert len({m.seq for m in messages}) == len(messages)
    model_calls = await events(sessionmaker, handle.id, "model_call")
    assert sorted(e.step for e in model_calls) == list(range(1, 11))
    tool_calls = await events(sessionmaker, handle.id, "tool_call")
    assert len(tool_calls) == 10  # finish is the workflow's own, not an activity's
    # Every run's model call saw the whole recent transcript, not just its own run.
    sent = stub.requests[9].body["messages"]
    assert sum(m["role"] != "system" for m in sent) == len(messages) - 3


async def _at_least_runs(
    client: Client, session_id: str, n: int
) -> list[WorkflowExecutionStatus | None] | None:
    statuses = await _runs(client, session_id)
    return statuses if len(statuses) >= n else None


async def test_human_control_across_the_boundary(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Run 1 ends after step 2, which waits for approval; meanwhile a human pauses the
    session and sends a message. Both survive the hand-over to run 2, where another
    approval is asked and given."""
    gate = threading.Event()
    plan = {
        1: _note(1),
        2: Reply.tool_call("http_fetch", {"url": f"{stub.url}/two"}),
        3: Reply.tool_call("http_fetch", {"url": f"{stub.url}/three"}),
        4: Reply.tool_call("finish", {"summary": "across runs"}),
    }
    counter = itertools.count(1)

    def respond(_request: Any) -> Reply:
        n = next(counter)
        if n == 3:
            gate.wait(20)
        return plan.get(n, Reply.text("unexpected extra call"))

    stub.default = respond
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch twice", steps_per_run=2))
        await approval_pending(handle, sessionmaker, "a2-0")
        await handle.signal(names.SIG_PAUSE, PauseInput(by="alice", reason="check first"))
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="use page three next", by="alice"))
        ack = await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a2-0", by="alice"), result_type=Ack
        )
        assert ack.accepted
        # Paused at the boundary, before any model call of the next run.
        st = await eventually(handle, lambda s: s.status == SessionStatus.PAUSED)
        assert st.paused and st.step == 2 and len(stub.requests) == 2

        await handle.execute_update(names.UPD_RESUME, ResumeInput(by="bob"), result_type=Ack)
        await until(lambda: len(stub.requests) >= 3, what="step 3 in flight")
        st = await eventually(handle, lambda s: s.run_index == 2)
        assert not st.paused
        gate.set()
        await approval_pending(handle, sessionmaker, "a3-0")
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a3-0", by="carol"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.runs == 2 and result.steps == 4
    # The message sent in run 1 reached the model in run 2.
    assert user_texts(stub.requests[2].body)[-1] == "use page three next"
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    fetched = [m.content for m in messages if m.name == "http_fetch"]
    assert "GET /two" in fetched[0] and "GET /three" in fetched[1]
    decided = await events(sessionmaker, handle.id, "approval_decided")
    assert [(e.payload["approval_id"], e.actor) for e in decided] == [
        ("a2-0", "alice"),
        ("a3-0", "carol"),
    ]
    assert [e.actor for e in await events(sessionmaker, handle.id, "pause")] == ["alice"]
    assert [e.actor for e in await events(sessionmaker, handle.id, "resume")] == ["bob"]
    assert (await session_row(sessionmaker, handle.id)).run_count == 2


async def test_a_start_of_no_steps_a_run_takes_one_a_run(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
) -> None:
    """``steps_per_run`` 0 from a plain Temporal client (vigil's faces refuse it) made
    every run hand over before its first step, for ever: the session took no step. Each
    run now takes one."""
    stub.enqueue(_note(1), Reply.tool_call("finish", {"summary": "two steps"}))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("two steps", steps_per_run=0))
        try:
            result: SessionResult = await until(
                lambda: _ended(handle), within=60, what="the session's end"
            )
        finally:
            await _terminate_if_running(handle)
    assert (result.status, result.steps, result.runs) == (SessionStatus.COMPLETED, 2, 2)


async def _ended(handle: Any) -> SessionResult | None:
    described = await handle.describe()
    if described.status == WorkflowExecutionStatus.RUNNING:
        return None
    return await handle.result()


async def _terminate_if_running(handle: Any) -> None:
    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        await handle.terminate(reason="the test is over")
