"""Pause holds a session between steps without calling the model; resume continues there."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    events,
    eventually,
    outlast_step_batch,
    running_worker,
    session_input,
    session_row,
    start,
    state,
    stub_settings,
    transcript,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, PauseInput, ResumeInput, SessionResult, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _note(n: int) -> Reply:
    return Reply.tool_call("write_artifact", {"name": f"note-{n}.txt", "content": f"note {n}"})


def _gated_script(stub: LLMStub, gate: threading.Event, gated_call: int) -> None:
    """Calls 1..3: two notes then finish; call ``gated_call`` waits for ``gate``."""
    plan = {1: _note(1), 2: _note(2), 3: Reply.tool_call("finish", {"summary": "all noted"})}
    counter = itertools.count(1)

    def respond(_request: Any) -> Reply:
        n = next(counter)
        if n == gated_call:
            gate.wait(20)
        return plan.get(n, Reply.text("unexpected extra call"))

    stub.default = respond


async def _paused_in_pg(sm: async_sessionmaker[DbSession], sid: str) -> bool:
    return (await session_row(sm, sid)).status == "paused"


@pytest.mark.parametrize("via", ["signal", "update"])
async def test_pause_holds_between_steps_and_resume_continues_there(
    via: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    gate = threading.Event()
    _gated_script(stub, gate, gated_call=2)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("write two notes"))
        await until(lambda: len(stub.requests) >= 2, what="second model call")
        # The pause arrives while step 2's model call is in flight: step 2 completes, then
        # the session holds before step 3.
        pause = PauseInput(by="alice", reason="lunch")
        if via == "signal":
            await handle.signal(names.SIG_PAUSE, pause)
        else:
            ack = await handle.execute_update(names.UPD_PAUSE, pause, result_type=Ack)
            assert ack.accepted
            with pytest.raises(WorkflowUpdateFailedError) as again:
                await handle.execute_update(names.UPD_PAUSE, pause, result_type=Ack)
            assert "already paused" in str(again.value.cause)
        await outlast_step_batch()
        gate.set()
        st = await eventually(handle, lambda s: s.status == SessionStatus.PAUSED)
        assert st.paused and st.step == 2
        await until(lambda: _paused_in_pg(sessionmaker, handle.id), what="sessions.status paused")
        # Held: no model call while paused.
        await asyncio.sleep(1.5)
        assert len(stub.requests) == 2
        assert (await state(handle)).status == SessionStatus.PAUSED

        resume = ResumeInput(by="bob")
        if via == "signal":
            await handle.signal(names.SIG_RESUME, resume)
        else:
            ack = await handle.execute_update(names.UPD_RESUME, resume, result_type=Ack)
            assert ack.accepted
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.steps == 3
    assert len(stub.requests) == 3
    # Continued exactly there: step 3's request carries both notes' results, once each.
    last = stub.requests[2].body["messages"]
    # The system prompt, vigil's note (the notes are artifacts now), then the transcript.
    assert [m["role"] for m in last] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert "note-1" in last[1]["content"] or "Artifacts" in last[1]["content"]
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert len(await events(sessionmaker, handle.id, "model_call")) == 3
    pause_ev = await events(sessionmaker, handle.id, "pause")
    resume_ev = await events(sessionmaker, handle.id, "resume")
    assert [(e.actor, e.reason) for e in pause_ev] == [("alice", "lunch")]
    assert [e.actor for e in resume_ev] == ["bob"]
    assert pause_ev[0].payload["at"] and resume_ev[0].payload["at"]
    assert pause_ev[0].created_at <= resume_ev[0].created_at


async def test_resume_update_on_a_running_session_is_refused(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    gate = threading.Event()
    _gated_script(stub, gate, gated_call=1)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("write two notes"))
        await until(lambda: len(stub.requests) >= 1, what="first model call")
        assert (await state(handle)).status == SessionStatus.RUNNING
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(names.UPD_RESUME, ResumeInput(by="eve"), result_type=Ack)
        assert "not paused" in str(refused.value.cause)
        # A resume signal on a running session changes nothing either.
        await handle.signal(names.SIG_RESUME, ResumeInput(by="eve"))
        gate.set()
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.steps == 3
    assert await events(sessionmaker, handle.id, "resume") == []
    assert await events(sessionmaker, handle.id, "pause") == []
