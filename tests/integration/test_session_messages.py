"""Human messages join the transcript between steps; a redirect changes the goal everywhere."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

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
    stub_settings,
    transcript,
    until,
    user_texts,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, MessageInput, RedirectInput, SessionResult, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _first_call_waits(stub: LLMStub, gate: threading.Event) -> None:
    """Step 1 (held until ``gate``) writes a note, step 2 finishes."""
    plan = {
        1: Reply.tool_call("write_artifact", {"name": "note.txt", "content": "n"}),
        2: Reply.tool_call("finish", {"summary": "done"}),
    }
    counter = itertools.count(1)

    def respond(_request: Any) -> Reply:
        n = next(counter)
        if n == 1:
            gate.wait(20)
        return plan.get(n, Reply.text("unexpected extra call"))

    stub.default = respond


@pytest.mark.parametrize("via", ["signal", "update"])
async def test_message_mid_run_reaches_the_next_model_call(
    via: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    gate = threading.Event()
    _first_call_waits(stub, gate)
    text = "also mention the river"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("write a note"))
        await until(lambda: len(stub.requests) >= 1, what="first model call")
        arg = MessageInput(text=text, by="carol")
        if via == "signal":
            await handle.signal(names.SIG_MESSAGE, arg)
        else:
            ack = await handle.execute_update(names.UPD_MESSAGE, arg, result_type=Ack)
            assert ack.accepted
        await outlast_step_batch()
        gate.set()
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    # After step 1's tool exchange, before step 2's reply.
    assert [m.role for m in messages] == [
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
        "tool",
        "system",
    ]
    injected = messages[3]
    assert (injected.content, injected.name, injected.step) == (text, "carol", 1)
    # The model's next request ends with it, and the first request did not have it.
    second = stub.requests[1].body["messages"]
    assert second[-1] == {"role": "user", "content": text}
    assert text not in user_texts(stub.requests[0].body)
    (ev,) = await events(sessionmaker, handle.id, "human_message")
    assert ev.actor == "carol" and ev.payload["seq"] == 3 and ev.payload["at"]


@pytest.mark.parametrize("via", ["signal", "update"])
async def test_redirect_changes_the_goal_everywhere(
    via: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    gate = threading.Event()
    _first_call_waits(stub, gate)
    new_goal = "write a poem about rivers instead"
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("write a note"))
        await until(lambda: len(stub.requests) >= 1, what="first model call")
        arg = RedirectInput(goal=new_goal, by="dave")
        if via == "signal":
            await handle.signal(names.SIG_REDIRECT, arg)
        else:
            ack = await handle.execute_update(names.UPD_REDIRECT, arg, result_type=Ack)
            assert ack.accepted and ack.message == "goal changed"
        st = await eventually(handle, lambda s: s.goal == new_goal)
        assert st.status == SessionStatus.RUNNING
        # The search attribute follows at once, while the model call is still in flight.
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(names.SA_GOAL) == new_goal
        await outlast_step_batch()
        gate.set()
        await until(lambda: _goal_is(sessionmaker, handle.id, new_goal), what="sessions.goal")
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    assert (await session_row(sessionmaker, handle.id)).goal == new_goal
    assert f"New goal from dave: {new_goal}" in user_texts(stub.requests[1].body)
    assert (await handle.describe()).typed_search_attributes.get(names.SA_GOAL) == new_goal
    (ev,) = await events(sessionmaker, handle.id, "redirect")
    assert ev.actor == "dave"
    assert (ev.payload["old_goal"], ev.payload["new_goal"]) == ("write a note", new_goal)
    assert_whole(await transcript(sessionmaker, handle.id))


async def _goal_is(sm: async_sessionmaker[DbSession], sid: str, goal: str) -> bool:
    return (await session_row(sm, sid)).goal == goal
