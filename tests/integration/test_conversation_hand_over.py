"""A conversation survives a hand-over (continue-as-new) while it waits for its next
message: the continued run answers the next message with the earlier ones in context, and
its idle clock is carried, not restarted. A message that arrives while the model is still
answering is answered too, not left until another message comes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    eventually,
    hand_over_while_waiting,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    wait_status,
)
from vigil.schema import names
from vigil.schema.payloads import (
    MessageInput,
    SessionStatus,
    StartSessionInput,
    ToolPolicy,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

SMALL_HISTORY = 150_000


def _conversation(goal: str) -> StartSessionInput:
    return session_input(
        goal,
        conversation=True,
        max_history_bytes=SMALL_HISTORY,
        policy=ToolPolicy(require_approval=[]),
    )


async def _carry(client: Client, handle: WorkflowHandle[Any, Any]) -> Any:
    """What the current run of the session was started with (its carry)."""
    history = await client.get_workflow_handle(handle.id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [arg] = await client.data_converter.decode(started.input.payloads, [StartSessionInput])
    return arg.carry


def _said(requests: list[Any]) -> list[list[str]]:
    """The user and assistant texts each model request carried, in order."""
    return [
        [m["content"] for m in r.body["messages"] if m["role"] in ("user", "assistant")]
        for r in requests
    ]


async def test_the_next_message_is_answered_after_a_hand_over_while_waiting(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(Reply.text("first answer"), Reply.text("second answer"))
    goal = "serve the customer"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, _conversation(goal))
        await eventually(handle, lambda s: s.step == 1 and s.status == SessionStatus.WAITING_HUMAN)
        await hand_over_while_waiting(handle)
        carried = await _carry(client, handle)
        assert carried.awaiting_message is True and carried.idle_until is not None
        # Handed over once more: the idle clock is the first run's, not restarted.
        after = await hand_over_while_waiting(handle)
        assert after.status == SessionStatus.WAITING_HUMAN and after.run_index > 2
        assert (await _carry(client, handle)).idle_until == carried.idle_until
        await handle.execute_update(
            names.UPD_MESSAGE, MessageInput(text="and the invoice?", by="ana")
        )
        answered = await eventually(
            handle, lambda s: s.step == 2 and s.status == SessionStatus.WAITING_HUMAN
        )
        assert answered.last_message == "second answer"
        await handle.cancel()
        await wait_status(handle, SessionStatus.CANCELLED)

    said = _said(stub.requests)
    assert said[-1] == [goal, "first answer", "and the invoice?"]
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert [m.content for m in messages if m.role == "assistant"][:2] == [
        "first answer",
        "second answer",
    ]


async def test_a_message_sent_while_the_model_answers_is_answered(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.hang(3.0, then=Reply.text("first answer")), Reply.text("answer to the late one")
    )
    goal = "serve the customer"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, _conversation(goal))
        await eventually(handle, lambda _s: len(stub.requests) == 1)
        # Sent while the model is still thinking about the goal.
        await handle.execute_update(names.UPD_MESSAGE, MessageInput(text="hurry up", by="ana"))
        answered = await eventually(
            handle, lambda s: s.step == 2 and s.status == SessionStatus.WAITING_HUMAN
        )
        assert answered.last_message == "answer to the late one"
        await handle.cancel()
        await wait_status(handle, SessionStatus.CANCELLED)

    assert _said(stub.requests)[-1] == [goal, "first answer", "hurry up"]
    assert_whole(await transcript(sessionmaker, handle.id))
