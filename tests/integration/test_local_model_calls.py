"""The low-latency mode (``[model] execution = "local"``): model calls as local activities.

A local activity holds its workflow task open; the SDK heartbeats that task, so human
control still lands while a long call runs: a pause or a message sent then is seen by the
workflow before the call ends, and Temporal's cancel ends the session during it.

A local call runs at least once: when the worker is lost, or is too slow (a starved CPU)
to end the held task within its timeout, the task is timed out and the call runs again
from the start (the README's low-latency trade-offs). These tests hold what must hold
either way: the step's reply is recorded once, the transcript is whole, the pause and the
message land, and the next step runs once. The stub answers by what each request holds,
so a repeated first call gets the first call's answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import CancelledError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    eventually,
    local_agent,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    until,
    user_texts,
)
from vigil.schema import names
from vigil.schema.payloads import MessageInput, PauseInput, ResumeInput, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

LONG = 20.0
"""A model call longer than a workflow task's timeout (10 s): the SDK heartbeats the task."""


async def _local_agent(sessionmaker: async_sessionmaker[DbSession]) -> str:
    return await local_agent(sessionmaker, [{"name": "read_artifact"}, {"name": "finish"}])


def _after_a_tool(body: Any) -> bool:
    """Whether a recorded OpenAI request is a later step's (it carries a tool's result)."""
    return any(m.get("role") == "tool" for m in body["messages"])


def _by_step(first: Reply, later: Reply) -> Any:
    """A responder answering the first step's call (however often it runs) with ``first``
    and any later step's with ``later``."""
    return lambda body: later if _after_a_tool(body) else first


async def test_signals_arrive_while_a_long_local_call_runs(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    name = await _local_agent(sessionmaker)
    stub.default = _by_step(
        Reply.hang(LONG, then=Reply.tool_call("read_artifact", {"name": "none"})),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    async with running_worker(
        client, stub_settings(settings, stub.url_openai, model_timeout_seconds=LONG * 2), task_queue
    ):
        handle = await start(client, task_queue, session_input("think long", agent_id=name))
        await until(lambda: len(stub.requests) >= 1 or None, what="the model call")
        await handle.signal(names.SIG_PAUSE, PauseInput(by="ops", reason="wait"))
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="one more thing", by="ops"))
        st = await eventually(handle, lambda s: s.paused, timeout=LONG)
        # Seen by the workflow while the model call still runs: no reply recorded yet.
        assert st.step == 0
        assert [m.role for m in await transcript(sessionmaker, handle.id)] == ["user"]
        # The call ends, the step finishes, and the pause holds before the next call.
        await eventually(
            handle, lambda s: s.status == SessionStatus.PAUSED and s.step == 1, timeout=LONG * 3
        )
        assert not any(_after_a_tool(r.body) for r in stub.requests)  # the pause held
        await handle.signal(names.SIG_RESUME, ResumeInput(by="ops"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    later = [r for r in stub.requests if _after_a_tool(r.body)]
    assert len(later) == 1 and "one more thing" in user_texts(later[0].body)
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert [m.role for m in messages].count("assistant") == 2  # each reply recorded once


async def test_cancel_during_a_long_local_call(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    name = await _local_agent(sessionmaker)
    stub.default = lambda body: Reply.hang(
        LONG, then=Reply.tool_call("finish", {"summary": "too late"})
    )
    async with running_worker(
        client, stub_settings(settings, stub.url_openai, model_timeout_seconds=LONG * 2), task_queue
    ):
        handle = await start(client, task_queue, session_input("never mind", agent_id=name))
        await until(lambda: len(stub.requests) >= 1 or None, what="the model call")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
        assert isinstance(ended.value.cause, CancelledError)
        messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert [m.role for m in messages] == ["user", "assistant", "system"]
    assert messages[1].content.startswith("[no reply recorded")
    assert messages[-1].content.startswith("Session ended: cancelled")
    # The stand-in for the reply is no step taken: the end is told at step 0.
    assert messages[-1].step == 0
    assert (await handle.describe()).typed_search_attributes.get(names.SA_STEP) == 0
    assert stub.requests and not any(_after_a_tool(r.body) for r in stub.requests)
