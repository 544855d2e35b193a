"""`ask_human` waits for a person; their message becomes the tool's result."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    events,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    tool_messages,
    transcript,
    until,
    wait_status,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, MessageInput, SessionResult, SessionStatus, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _ask_then_finish(stub: LLMStub) -> None:
    stub.enqueue(
        Reply.tool_call("ask_human", {"question": "Which colour should the report be?"}),
        Reply.tool_call("finish", {"summary": "asked"}),
    )


async def test_a_message_answers_the_question(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _ask_then_finish(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("make a report"))
        st = await wait_status(handle, SessionStatus.WAITING_HUMAN)
        assert st.waiting_for == "a human reply to: Which colour should the report be?"

        async def waiting_in_pg() -> bool:
            return (await session_row(sessionmaker, handle.id)).status == "waiting_human"

        await until(waiting_in_pg, what="status waiting_human")
        assert len(stub.requests) == 1
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="blue, please", by="frank"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (answer,) = [m for m in tool_messages(messages) if m.name == "ask_human"]
    assert answer.content == "frank replied: blue, please"
    # It is the tool's result, not a separate user message.
    assert [m.content for m in messages if m.role == "user"] == ["make a report"]
    told = stub.requests[1].body["messages"][-1]
    assert messages[1].tool_calls is not None
    assert told == {
        "role": "tool",
        "tool_call_id": messages[1].tool_calls[0]["id"],
        "content": "frank replied: blue, please",
    }
    (ev,) = await events(sessionmaker, handle.id, "human_reply")
    assert ev.actor == "frank" and ev.payload["text"] == "blue, please"


async def test_no_answer_in_time(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _ask_then_finish(stub)
    policy = ToolPolicy(ask_human_timeout_seconds=2)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("make a report", policy=policy))
        await wait_status(handle, SessionStatus.WAITING_HUMAN)
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    (answer,) = [
        m for m in tool_messages(await transcript(sessionmaker, handle.id)) if m.name == "ask_human"
    ]
    assert answer.content == "no human replied in time"


async def test_a_message_sent_as_an_update_says_it_answers_the_question(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
) -> None:
    """`vigil say` to a session waiting on ask_human said "message queued for the next
    step"; the message was taken as the answer."""
    _ask_then_finish(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("make a report"))
        await wait_status(handle, SessionStatus.WAITING_HUMAN)
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text="blue, please", by="frank"), result_type=Ack
        )
        assert ack.message == "message taken as the answer to the agent's question", ack
        assert (await handle.result()).status == SessionStatus.COMPLETED


async def test_a_message_sent_before_the_question_does_not_answer_it(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A message sent while the model call ran (its sender told it is queued for the next
    step), then the reply asks a question: the queued message answered the question at
    once, which no one had seen. The question now waits for a message sent after it; the
    earlier one joins the transcript at the next step, as its sender was told."""
    stub.enqueue(
        Reply.hang(
            2.0, then=Reply.tool_call("ask_human", {"question": "Which colour should it be?"})
        ),
        Reply.tool_call("finish", {"summary": "asked"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("make a report"))
        await until(lambda: len(stub.requests) == 1, what="the model call")
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text="also add a chart", by="gina"), result_type=Ack
        )
        assert "next step" in ack.message, ack
        st = await wait_status(handle, SessionStatus.WAITING_HUMAN)
        assert st.waiting_for == "a human reply to: Which colour should it be?"
        assert len(stub.requests) == 1
        # Told it answers (it was told "queued", with a message queued before it).
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text="blue", by="frank"), result_type=Ack
        )
        assert "answer" in ack.message, ack
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (answer,) = [m for m in tool_messages(messages) if m.name == "ask_human"]
    assert answer.content == "frank replied: blue"
    gina = [m for m in messages if m.role == "user" and m.name == "gina"]
    assert [m.content for m in gina] == ["also add a chart"] and gina[0].seq > answer.seq


async def test_a_full_queue_still_takes_the_answer_to_a_question(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Messages queued before the question wait for the next step; when they fill the
    queue, the reply to the question is still taken (it goes to the question at once),
    or the question could only time out."""
    from vigil.schema.payloads import MAX_HUMAN_TEXT

    stub.enqueue(
        Reply.hang(3.0, then=Reply.tool_call("ask_human", {"question": "Which colour?"})),
        Reply.tool_call("finish", {"summary": "asked"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("make a report"))
        await until(lambda: len(stub.requests) == 1, what="the model call")
        with pytest.raises(WorkflowUpdateFailedError):  # until the queue is full
            for n in range(100):
                await handle.execute_update(
                    names.UPD_MESSAGE, MessageInput(text=f"{n}" * MAX_HUMAN_TEXT, by="gina")
                )
        await wait_status(handle, SessionStatus.WAITING_HUMAN)
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text="blue", by="frank"), result_type=Ack
        )
        assert "answer" in ack.message, ack
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    (answer,) = [
        m for m in tool_messages(await transcript(sessionmaker, handle.id)) if m.name == "ask_human"
    ]
    assert answer.content == "frank replied: blue"
