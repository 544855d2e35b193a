"""Folded steps: the reply's leading tool calls that need nothing of the workflow run inside
``call_model`` (one activity per step), recorded exactly as ``run_tool`` records them, while
approvals, pauses and cancellation cut in where they always did."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError

from tests.support.history import activity_runs
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    until,
    user_texts,
)
from vigil.schema import names
from vigil.schema.payloads import (
    ApproveInput,
    MessageInput,
    PauseInput,
    ResumeInput,
    SessionStatus,
    ToolPolicy,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

WRITE = ("write_artifact", {"name": "notes.txt", "content": "folded"})
READ = ("read_artifact", {"name": "notes.txt"})


async def _kinds(handle: WorkflowHandle[Any, Any]) -> list[str]:
    return [run.name for run in await activity_runs(handle)]


async def test_calls_that_need_nothing_run_inside_the_model_activity(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_calls(WRITE, READ),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("write then read"))
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 2)
    kinds = await _kinds(handle)
    assert names.ACT_RUN_TOOL not in kinds, kinds
    # A model activity a step, or one for both when step 1's call took step 2 too (a step
    # batch: step 1 is plain, and may end within the batch's window).
    assert kinds.count(names.ACT_CALL_MODEL) in (1, 2), kinds
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    roles = ["user", "assistant", "tool", "tool", "assistant", "tool", "system"]
    assert [m.role for m in messages] == roles
    assert "folded" in messages[3].content  # the read saw the write: run in order
    tool_events = await events(sessionmaker, handle.id, "tool_call")
    assert sorted(e.key for e in tool_events) == ["tool:1:0", "tool:1:1"]


async def test_a_call_needing_approval_is_not_folded_nor_any_after_it(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_calls(READ, WRITE, READ),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    policy = ToolPolicy(require_approval=["write_artifact"])
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("careful", policy=policy))
        await approval_pending(handle, sessionmaker, "a1-1")
        # Only the call before the one waiting for a human has run.
        before = await events(sessionmaker, handle.id, "tool_call")
        assert [e.key for e in before] == ["tool:1:0"]
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-1", by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    kinds = await _kinds(handle)
    # The approved call and the one after it ran as their own activities, in order.
    assert kinds.count(names.ACT_RUN_TOOL) == 2, kinds
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert "folded" in messages[4].content  # the last read ran after the approved write


async def test_a_pause_during_a_folded_step_holds_before_the_next_model_call(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.hang(2.0, then=Reply.tool_calls(WRITE, READ)),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("pause me"))
        await until(lambda: len(stub.requests) == 1 or None, what="the first model call")
        await handle.signal(names.SIG_PAUSE, PauseInput(by="ops", reason="look"))
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="mind the notes", by="ops"))
        st = await eventually(handle, lambda s: s.status == SessionStatus.PAUSED)
        assert st.step == 1
        # The folded step finished (both results recorded), the message queued during it
        # joined the transcript after it; no model call since.

        async def roles() -> list[str] | None:
            found = [m.role for m in await transcript(sessionmaker, handle.id)]
            return found if len(found) >= 5 else None

        assert await until(roles) == ["user", "assistant", "tool", "tool", "user"]
        assert len(stub.requests) == 1
        await handle.signal(names.SIG_RESUME, ResumeInput(by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    assert len(stub.requests) == 2
    assert "mind the notes" in user_texts(stub.requests[1].body)
    assert_whole(await transcript(sessionmaker, handle.id))


async def test_cancel_inside_a_folded_step_leaves_a_whole_transcript(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(Reply.hang(1.5, then=Reply.tool_calls(WRITE, READ)))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("cancel me", heartbeat_seconds=1))
        await until(lambda: len(stub.requests) == 1 or None, what="the model call")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
        assert isinstance(ended.value.cause, CancelledError)

        async def settled() -> bool:
            messages = await transcript(sessionmaker, handle.id)
            return bool(messages) and messages[-1].role == "system"

        await until(settled, what="the final message")
        # The model activity may still be running: nothing it writes may leave a gap or
        # an unanswered call.
        await asyncio.sleep(2.5)  # past the reply's hang, with the worker still up
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert messages[-1].content.startswith("Session ended: cancelled")
    # The end's event names the seq its message was written at.
    (ended_ev,) = await events(sessionmaker, handle.id, "session_ended")
    assert ended_ev.payload["seq"] == messages[-1].seq
