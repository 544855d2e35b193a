"""A cancel that arrives while a session writes its end does not drop that end.

A session that has ended (here: a conversation that got no message for its idle time)
writes its last records: the ending's message and event, its final status and summary,
its outcome's memory. A Temporal cancel that lands during that write (likeliest while
PostgreSQL is slow or down, when the write keeps retrying and an operator cancels) used to
end the workflow as cancelled with none of it written. The session's end stands: the
write is made again and the session completes as it had ended.

The write is held up by a lock on the session's row, taken by the test; the cancel is
seen to land when the held write's local activity is given up in the history.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from tests.support.held_end import (
    cancel_landed,
    end_write_waiting,
    session_row_held,
    signals_in_history,
)
from tests.support.llm_stub import LLMStub, Reply
from tests.support.locks import waiting_for_lock
from tests.support.sessions import (
    assert_whole,
    events,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    transcript,
    until,
    wait_status,
)
from vigil.activities.record import store
from vigil.schema import names
from vigil.schema.payloads import Budget, MessageInput, PauseInput, SessionResult, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

IDLE = 2.0
HELD_IDLE = 6.0
"""Long enough for the test to hold the end's event before the session writes it."""


async def test_a_cancel_during_the_last_write_leaves_the_end_written(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    stub.enqueue(Reply.text("hello, how can I help?"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await _waiting_conversation(client, task_queue, IDLE)
        async with session_row_held(sessionmaker, handle.id):
            # The idle time passes, the session ends, and its last write waits for the row.
            await until(lambda: waiting_for_lock(database_url), what="the held end")
            await handle.cancel()
            await until(lambda: cancel_landed(handle), within=60, what="the cancel")
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert "idle" in result.summary
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert messages[-1].role == "system" and "completed" in (messages[-1].content or "")
    row = await session_row(sessionmaker, handle.id)
    assert row.status == SessionStatus.COMPLETED.value


async def test_input_signalled_while_the_end_is_written_is_recorded_refused(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    """Signals that reach a session while it writes its end are refused and recorded so,
    with who they say sent them and their text (before: a message went into an inbox nobody would
    read again, a pause was applied to an ended session, and neither was recorded)."""
    stub.enqueue(Reply.text("hello, how can I help?"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await _waiting_conversation(client, task_queue, HELD_IDLE)
        # Only the end's write waits (a row lock would hold the write before it too, and a
        # pause signalled then would pause the session before it ended).
        async with end_write_waiting(
            sessionmaker, handle.id, "agent-test", "completed", database_url
        ):
            await handle.signal(names.SIG_MESSAGE, MessageInput(text="are you there?", by="ana"))
            await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="lunch"))
            # In the history once the held workflow task has been heartbeaten (a few
            # seconds): the session takes them while its end's write still waits.
            await until(lambda: signals_in_history(handle, 2), within=30, what="both signals")
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    refused = await events(sessionmaker, handle.id, "input_rejected")
    assert [
        (e.payload.get("by"), e.reason, e.payload.get("signal"), e.payload.get("text"))
        for e in refused
    ] == [
        ("ana", "the session has ended (completed)", "message", "are you there?"),
        ("bob", "the session has ended (completed)", "pause", None),
    ]
    assert await events(sessionmaker, handle.id, "session_paused") == []
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert "are you there?" not in [m.content for m in messages]


async def test_a_message_as_the_end_is_written_leaves_one_end_and_loses_no_word(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    """A message signalled while the session writes its end, the write let go at once:
    Temporal refuses the workflow task that wrote the end (a signal came meanwhile) and
    the worker runs it again with the message first, a path that goes on. The end written
    stands (the record's), the message is recorded as refused with its text, and nothing
    is written as if the session had gone on. Before: the message was lost (its seq taken
    by the first end's message), the model answered a transcript that ended in "Session
    ended", and a second "Session ended" followed without its event."""
    stub.enqueue(Reply.text("hello"), Reply.text("answering your second message"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await _waiting_conversation(client, task_queue, HELD_IDLE)
        async with end_write_waiting(
            sessionmaker, handle.id, "agent-test", "completed", database_url
        ):
            await handle.signal(names.SIG_MESSAGE, MessageInput(text="one more thing", by="ana"))
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert "idle" in result.summary
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    said = [(m.role, m.content) for m in messages]
    assert said[-1][0] == "system" and said[-1][1].startswith("Session ended: completed")
    assert [m for m in said if m[0] == "system" and m[1].startswith("Session ended")] == said[-1:]
    assert ("assistant", "answering your second message") not in said
    refused = await events(sessionmaker, handle.id, "input_rejected")
    assert [(e.payload.get("by"), e.payload.get("text"), e.reason) for e in refused] == [
        ("ana", "one more thing", "the session has ended (completed)")
    ]
    assert len(await events(sessionmaker, handle.id, "session_ended")) == 1
    row = await session_row(sessionmaker, handle.id)
    assert row.status == SessionStatus.COMPLETED.value and row.finished_at is not None


async def test_a_message_as_the_last_step_ends_leaves_the_recorded_end(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    """The same on a path that ends with the same status: a one-step session's final
    answer, a message signalled while its end is written. The retried task takes the
    message first and, with no step left, ends completed too, the message before its end:
    an end at another seq, refused (the record's end stands; the message is recorded as
    refused). Before a refused write compared the run and seq of the end, this path's end
    passed for being the same status, and the message was lost under the first end."""
    stub.enqueue(Reply.text("all done here, nothing more to do", chunk_delay=0.3))
    arg = session_input("answer once").model_copy(update={"budget": Budget(max_steps=1)})
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, arg)
        await until(lambda: _recorded(sessionmaker, handle.id), what="the session's row")
        async with end_write_waiting(
            sessionmaker, handle.id, "agent-test", "completed", database_url
        ):
            await handle.signal(names.SIG_MESSAGE, MessageInput(text="wait, one more", by="ana"))
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    ends = [m for m in messages if m.role == "system" and m.content.startswith("Session ended")]
    assert ends == messages[-1:]
    refused = await events(sessionmaker, handle.id, "input_rejected")
    assert [(e.payload.get("by"), e.payload.get("text")) for e in refused] == [
        ("ana", "wait, one more")
    ]
    assert len(await events(sessionmaker, handle.id, "session_ended")) == 1


async def _waiting_conversation(
    client: Client, task_queue: str, idle: float
) -> WorkflowHandle[Any, Any]:
    """A conversation that answered its goal and waits for a message, to end ``idle``
    seconds on."""
    handle = await start(
        client,
        task_queue,
        session_input("answer", conversation=True, conversation_idle_seconds=idle),
    )
    await wait_status(handle, SessionStatus.WAITING_HUMAN)
    return handle


async def _recorded(sessionmaker: async_sessionmaker[DbSession], sid: str) -> bool:
    async with sessionmaker() as db:
        return await store.get_session(db, sid) is not None
