"""Whatever a session waits for survives a hand-over to the next run while it waits.

With a small ``max_history_bytes``, a few refused signals make a waiting session
continue-as-new. Its pause, its timer, its question and the messages queued during an
approval travel in the carry; the session then ends normally.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    hand_over_while_waiting,
    running_worker,
    session_input,
    session_row,
    start,
    state,
    stub_settings,
    tool_messages,
    transcript,
    wait_status,
)
from vigil.schema import names
from vigil.schema.agents import AgentSpec
from vigil.schema.limits import MAX_QUEUED_BYTES
from vigil.schema.payloads import (
    MAX_HUMAN_TEXT,
    Ack,
    ApproveInput,
    MessageInput,
    PauseInput,
    RedirectInput,
    ResumeInput,
    SessionResult,
    SessionStatus,
    ToolPolicy,
    WakeInput,
)
from vigil.workers.agents import AgentService
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

SMALL_HISTORY = 150_000


def _input(goal: str, **extra: Any) -> Any:
    extra.setdefault("policy", ToolPolicy(require_approval=[]))
    return session_input(goal, max_history_bytes=SMALL_HISTORY, **extra)


async def test_a_pause_survives_the_hand_over(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.hang(1.0, then=Reply.tool_call("remember", {"content": "paused once"})),
        Reply.tool_call("finish", {"summary": "done after the pause"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, _input("work, pause, work"))
        await handle.execute_update(names.UPD_PAUSE, PauseInput(by="bob", reason="lunch"))
        await wait_status(handle, SessionStatus.PAUSED)
        asked = len(stub.requests)
        after = await hand_over_while_waiting(handle)
        assert (after.status, after.paused) == (SessionStatus.PAUSED, True)
        assert len(stub.requests) == asked, "a paused session must not step"
        await handle.execute_update(names.UPD_RESUME, ResumeInput(by="bob"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.runs > 1
    assert_whole(await transcript(sessionmaker, handle.id))


async def test_a_timer_survives_the_hand_over(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_calls(
            ("wait_until", {"seconds": 3600, "reason": "let it settle"}),
            ("remember", {"content": "the second call of the step"}),
        ),
        Reply.tool_call("finish", {"summary": "woke and finished"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, _input("sleep an hour"))
        asleep = await wait_status(handle, SessionStatus.SLEEPING)
        after = await hand_over_while_waiting(handle)
        assert after.status == SessionStatus.SLEEPING
        assert after.waiting_for == asleep.waiting_for  # the same deadline
        ack = await handle.execute_update(
            names.UPD_WAKE, WakeInput(by="carol", reason="enough"), result_type=Ack
        )
        assert ack.accepted
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    woke, second = tool_messages(messages)[:2]
    assert woke.content.startswith("woken early by carol")
    assert second.name == "remember"  # the step's later call ran in the next run


async def test_a_question_survives_the_hand_over(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("ask_human", {"question": "Which colour?"}),
        Reply.tool_call("finish", {"summary": "asked"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, _input("make a report"))
        asking = await wait_status(handle, SessionStatus.WAITING_HUMAN)
        after = await hand_over_while_waiting(handle)
        assert (after.status, after.waiting_for) == (asking.status, asking.waiting_for)
        assert (await session_row(sessionmaker, handle.id)).status == "waiting_human"
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="blue", by="frank"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.runs > 1
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert tool_messages(messages)[0].content == "frank replied: blue"


async def test_messages_queued_during_an_approval_travel_with_it(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}),
        Reply.tool_call("finish", {"summary": "wrote it"}),
    )
    policy = ToolPolicy(require_approval=["write_artifact"])
    queued = [f"note {n}: " + "q" * 20_000 for n in range(3)]
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, _input("write", policy=policy))
        await approval_pending(handle, sessionmaker)
        for text in queued:
            await handle.signal(names.SIG_MESSAGE, MessageInput(text=text, by="dave"))
        after = await hand_over_while_waiting(handle)
        assert [p.approval_id for p in after.pending_approvals] == ["a1-0"]
        assert after.status == SessionStatus.WAITING_APPROVAL
        # The queue is bounded: it travels in the next run's input.
        filler = "f" * MAX_HUMAN_TEXT
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            for _ in range(MAX_QUEUED_BYTES // MAX_HUMAN_TEXT + 1):
                await handle.execute_update(
                    names.UPD_MESSAGE, MessageInput(text=filler, by="dave"), result_type=Ack
                )
        assert "already wait for the next step" in str(refused.value.cause)
        await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="alice"), result_type=Ack
        )
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.runs > 1
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    dave = [m for m in messages if m.role == "user" and m.name == "dave"]
    assert [m.content for m in dave][: len(queued)] == queued  # in order
    tool = tool_messages(messages)[0]
    assert all(m.seq > tool.seq for m in dave), "queued messages joined inside the tool exchange"


async def test_redirect_signals_are_held_to_the_queue_limit_too(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A redirect's new goal waits in the same queue as messages (it joins the transcript
    at the next step): as a signal, like the update, it is refused once the queue is full,
    so no flood of them grows what the next run's input carries."""
    stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}),
        Reply.tool_call("finish", {"summary": "wrote it"}),
    )
    policy = ToolPolicy(require_approval=["write_artifact"])
    goal = "g" * (MAX_HUMAN_TEXT - 100)
    sent = MAX_QUEUED_BYTES // len(goal) + 3
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("write", policy=policy))
        await approval_pending(handle, sessionmaker)
        for n in range(sent):
            await handle.signal(names.SIG_REDIRECT, RedirectInput(goal=f"{n} {goal}", by="eve"))
        st = await eventually(handle, lambda s: s.rejected_inputs >= 3 or None)
        assert st.status == SessionStatus.WAITING_APPROVAL
        await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="alice"), result_type=Ack
        )
        result: SessionResult = await handle.result()
        final = await state(handle)
    assert result.status == SessionStatus.COMPLETED
    assert final.rejected_inputs == 3, final.rejected_inputs
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    goals = [m for m in messages if m.role == "user" and m.name == "eve"]
    assert len(goals) == sent - 3
    rejected = await events(sessionmaker, handle.id, "input_rejected")
    assert len(rejected) == 3
    assert all("already wait for the next step" in (e.reason or "") for e in rejected)


async def test_an_approval_handed_over_from_a_batch_keeps_its_step(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """One model call took two steps (a batch): a plain read, then a write that waits for
    approval. The wait handed over to the next run with the batch's first step: the
    approved write was recorded at step 1, and its ``tool_call`` event, keyed by that step
    and its index, met the read's key and was dropped."""
    name = f"batch-hand-over-{uuid.uuid4().hex[:8]}"
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"batch_ms": 5000},
                "tools": [{"name": t} for t in ("read_artifact", "write_artifact", "finish")],
            }
        )
    )
    stub.enqueue(
        Reply.tool_call("read_artifact", {"name": "notes.txt"}),
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}),
        Reply.tool_call("finish", {"summary": "wrote it"}),
    )
    policy = ToolPolicy(require_approval=["write_artifact"])
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        arg = _input("read, write", agent_id=name, policy=policy)
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker, "a2-0")
        first = client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
        scheduled = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in (await first.fetch_history()).events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert scheduled.count(names.ACT_CALL_MODEL) == 1, "the two steps were not one batch"
        after = await hand_over_while_waiting(handle)
        assert [p.approval_id for p in after.pending_approvals] == ["a2-0"]
        await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a2-0", by="alice"), result_type=Ack
        )
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED and result.runs > 1
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert [(m.name, m.step) for m in tool_messages(messages)] == [
        ("read_artifact", 1),
        ("write_artifact", 2),
        ("finish", 3),
    ]
    calls = await events(sessionmaker, handle.id, "tool_call")
    assert sorted((e.payload["tool"], e.step) for e in calls) == [
        ("read_artifact", 1),
        ("write_artifact", 2),
    ]
