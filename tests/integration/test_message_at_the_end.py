"""A message acknowledged while the model gives its last answer is answered, not lost.

A person sends a message (the update answers "message queued for the next step") while
the session's model call runs, and that call's reply would end the session: a final
answer without tool calls, or the ``finish`` tool. The session does not end over the
message: it joins the transcript after the reply, the model is asked again with it, and the
session ends on the next reply. In both modes (a low-latency call is a local activity, and
the update lands while it runs through the SDK's heartbeat of the workflow task).
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    local_agent,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    until,
    user_texts,
)
from vigil.activities.record.store import StoredMessage
from vigil.schema import names
from vigil.schema.payloads import Ack, Budget, MessageInput, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

LATE = "one more thing: use the staging bucket"

ENDINGS = {
    "final answer": Reply.text("all done"),
    "finish tool": Reply.tool_call("finish", {"summary": "all done"}),
}


async def _message_during_the_last_call(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    agent_id: str,
    ending: Reply,
    hang: float,
) -> None:
    stub.enqueue(Reply.hang(hang, then=ending), Reply.text("done, and noted the bucket"))
    config = stub_settings(settings, stub.url_openai, model_timeout_seconds=hang * 3)
    async with running_worker(client, config, task_queue):
        handle = await start(client, task_queue, session_input("tidy up", agent_id=agent_id))
        await until(lambda: len(stub.requests) == 1 or None, what="the model call")
        ack = await asyncio.wait_for(
            handle.execute_update(
                names.UPD_MESSAGE, MessageInput(text=LATE, by="ana"), result_type=Ack
            ),
            timeout=hang * 3,
        )
        assert ack.accepted, ack
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert result.summary == "done, and noted the bucket", result
    # The model was asked again, with the message after its reply.
    assert len(stub.requests) == 2, [r.body for r in stub.requests]
    assert LATE in user_texts(stub.requests[1].body)
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    said = [(m.role, m.content) for m in messages]
    late = [i for i, (role, text) in enumerate(said) if role == "user" and LATE in (text or "")]
    assert len(late) == 1, said
    assert said[late[0] + 1][0] == "assistant", said  # answered by the next reply


@pytest.mark.parametrize("ending", list(ENDINGS), ids=list(ENDINGS))
async def test_a_message_during_the_last_call_is_answered(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    ending: str,
) -> None:
    await _message_during_the_last_call(
        client, settings, task_queue, stub, sessionmaker, "agent-test", ENDINGS[ending], 1.5
    )


async def test_a_message_during_the_last_low_latency_call_is_answered(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = await local_agent(sessionmaker, [{"name": "finish"}])
    # Longer than the SDK's heartbeat of the held workflow task (8 s of a 10 s timeout),
    # so the update lands while the local call still runs.
    await _message_during_the_last_call(
        client, settings, task_queue, stub, sessionmaker, agent, ENDINGS["final answer"], 12.0
    )


async def test_a_message_before_a_cancel_is_in_the_transcript(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Cancelled while the model answers, after a message was acknowledged: no further
    step runs, and the message is in the transcript before the session's end."""
    stub.enqueue(Reply.hang(3.0, then=Reply.text("all done")))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("tidy up", heartbeat_seconds=1))
        await until(lambda: len(stub.requests) == 1 or None, what="the model call")
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text=LATE, by="ana"), result_type=Ack
        )
        assert ack.accepted, ack
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()

        async def ended() -> list[StoredMessage] | None:
            found = await transcript(sessionmaker, handle.id)
            return found if found and found[-1].role == "system" else None

        messages = await until(ended, what="the session's end in the transcript")
    assert_whole(messages)
    said = [(m.role, m.content or "") for m in messages]
    assert [role for role, _ in said][-2:] == ["user", "system"], said
    assert LATE in said[-2][1] and "cancelled" in said[-1][1], said
    assert len(stub.requests) == 1


@pytest.mark.parametrize("ending", list(ENDINGS), ids=list(ENDINGS))
async def test_a_message_during_the_last_allowed_step_ends_as_the_step_said(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    ending: str,
) -> None:
    """No step is left for an answer (the step budget is used): the session ends as its
    last step said (completed, with that step's summary, not over its budget), the
    message in the transcript before the end."""
    stub.enqueue(Reply.hang(1.5, then=ENDINGS[ending]))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client, task_queue, session_input("tidy up", budget=Budget(max_steps=1))
        )
        await until(lambda: len(stub.requests) == 1 or None, what="the model call")
        ack = await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text=LATE, by="ana"), result_type=Ack
        )
        assert ack.accepted, ack
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert result.summary == "all done", result
    assert len(stub.requests) == 1
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    said = [(m.role, m.content or "") for m in messages]
    assert [role for role, _ in said][-2:] == ["user", "system"], said
    assert LATE in said[-2][1] and "completed" in said[-1][1], said
