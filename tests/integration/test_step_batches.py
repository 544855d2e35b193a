"""Step batches (``vigil-step-batches`` in the low-latency mode, ``vigil-default-step-batches``
in the default mode): one model call, local or a regular activity, goes on to the next
steps while each is plain (every tool call of its reply answered in the call), within its
agent's window (``[model] batch_ms``). The tests run in both modes (``execution``), but
those about one mode's own way.

What must hold whatever the batch: the record has each step once and whole, the session's
counts are the steps it took, a step that needs the workflow (an approval here) ends the
batch before anything after it runs, a pause holds the session where the workflow and the
record agree, and a session cancelled inside a batch closes the steps the call recorded
past the one the workflow knew of, with its ending after them and at their last step.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from tests.support.history import activity_runs, local_activities
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    hand_over_while_waiting,
    local_agent,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    transcript,
    until,
)
from tests.support.zero_model import ZeroModel
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.activities.tools.folded import UNANSWERED, close_open_step
from vigil.schema import event_kinds, names
from vigil.schema.payloads import (
    ApproveInput,
    EventIn,
    MessageIn,
    MessageInput,
    PauseInput,
    RecordInput,
    SessionResult,
    SessionStatus,
    SessionUpdate,
    ToolPolicy,
)
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration

LONG = 20.0
"""A model call that is still running when the test acts."""
READ = ("read_artifact", {"name": "notes.txt"})
TWO_STEPS_ENDED = ["user", "assistant", "tool", "assistant", "tool", "system"]
"""A record of two steps (a tool call and its answer each), then the end."""
WIDE = 5_000
"""A batch window (ms) no step of these sessions outlasts: every plain step that follows
is taken in the same call, however slow the machine."""


def _answered(body: Any) -> int:
    """How many steps a recorded OpenAI request follows (one tool result each here)."""
    return sum(m.get("role") == "tool" for m in body["messages"])


async def _model_calls(handle: WorkflowHandle[Any, Any]) -> int:
    """The session's model calls in its history: local activities (a marker each) and
    regular ones (scheduled)."""
    history = await handle.fetch_history()
    scheduled = sum(
        e.activity_task_scheduled_event_attributes.activity_type.name == names.ACT_CALL_MODEL
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    )
    return scheduled + await local_activities(handle, names.ACT_CALL_MODEL)


@pytest.fixture(params=["local", "activity"])
def execution(request: pytest.FixtureRequest) -> str:
    """The agent's ``[model] execution``: the low-latency mode, then the default."""
    return str(request.param)


async def _whole(
    sessionmaker: async_sessionmaker[DbSession], session_id: str
) -> list[record.StoredMessage]:
    """The session's transcript, checked whole (every seq, every call answered)."""
    messages = await transcript(sessionmaker, session_id)
    assert_whole(messages)
    return messages


def _replied_at(messages: list[record.StoredMessage]) -> list[int]:
    """The step of each of the model's replies, in order."""
    return [m.step for m in messages if m.role == "assistant"]


async def _run_to_end(
    client: Client, settings: Settings, task_queue: str, stub: LLMStub, agent: str, goal: str
) -> tuple[WorkflowHandle[Any, Any], SessionResult]:
    """A session of ``agent`` run to its end on a worker of its own."""
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input(goal, agent_id=agent))
        return handle, await handle.result()


async def _agent(
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
    batch_ms: int | None,
    *more_tools: dict[str, Any],
    **spec: Any,
) -> str:
    model: dict[str, Any] = {"execution": execution}
    if batch_ms is not None:
        model["batch_ms"] = batch_ms
    tools = [{"name": "read_artifact"}, {"name": "finish"}, *more_tools]
    return await local_agent(sessionmaker, tools, model=model, **spec)


@pytest.mark.parametrize(("batch_ms", "calls"), [(WIDE, 1), (0, 6)])
async def test_plain_steps_are_taken_in_one_model_call(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
    batch_ms: int,
    calls: int,
) -> None:
    # Five plain steps (a read, answered inside the call), then the finish, which the
    # workflow handles: with a window, the sixth step is the batch's last; with none
    # (batch_ms = 0), each step has its own call.
    stub.default = lambda body: (
        Reply.tool_call(*READ)
        if _answered(body) < 5
        else Reply.tool_call("finish", {"summary": "done"})
    )
    name = await _agent(sessionmaker, execution, batch_ms)
    handle, result = await _run_to_end(client, settings, task_queue, stub, name, "read five times")
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 6)
    assert len(stub.requests) == 6
    assert await _model_calls(handle) == calls
    messages = await _whole(sessionmaker, handle.id)
    assert _replied_at(messages) == [1, 2, 3, 4, 5, 6]
    # An end reached normally names the seq its message was written at too.
    (ended,) = await events(sessionmaker, handle.id, "session_ended")
    assert (messages[-1].name, ended.payload["seq"]) == ("vigil", messages[-1].seq)
    model_events = await events(sessionmaker, handle.id, "model_call")
    assert sorted(e.key for e in model_events) == [f"model:{n}" for n in range(1, 7)]
    row = await session_row(sessionmaker, handle.id)
    assert (row.step, row.status) == (6, "completed")
    assert row.tokens_in == result.tokens_in and row.tokens_out == result.tokens_out


async def test_a_default_mode_batch_longer_than_its_heartbeat_timeout_heartbeats(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # Plain steps of 0.2 s each, in one regular activity for about 2.4 s, with a 1 s
    # heartbeat timeout: no step's own wait lasts the third of it after which a step
    # heartbeats, so the batch itself must between steps, or Temporal times the healthy
    # call out and its next attempt asks the model again for the steps it is taking.
    stub.default = lambda body: Reply.hang(
        0.2,
        then=Reply.tool_call(*READ)
        if _answered(body) < 11
        else Reply.tool_call("finish", {"summary": "done"}),
    )
    name = await _agent(sessionmaker, "activity", WIDE)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client,
            task_queue,
            session_input("read on", agent_id=name, heartbeat_seconds=1),
        )
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 12)
    assert len(stub.requests) == 12  # each step asked once
    assert _replied_at(await _whole(sessionmaker, handle.id)) == list(range(1, 13))
    runs = [r.attempt for r in await activity_runs(handle, names.ACT_CALL_MODEL)]
    assert runs and set(runs) == {1}, runs


async def test_a_step_that_fails_inside_a_batch_is_handed_back_and_taken_again(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # Step 2's first answer is not JSON: the batch returns step 1 and hands step 2 back
    # (rather than failing the call), and the workflow calls step 2 again (a new call,
    # which goes on). That it does so before any input is not shown here: no input comes.
    read = Reply.tool_call(*READ)
    stub.enqueue(read, Reply.garbage(), read, Reply.tool_call("finish", {"summary": "done"}))
    name = await _agent(sessionmaker, execution, WIDE)
    handle, result = await _run_to_end(client, settings, task_queue, stub, name, "read twice")
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 3)
    assert len(stub.requests) == 4
    assert await _model_calls(handle) == 2
    assert _replied_at(await _whole(sessionmaker, handle.id)) == [1, 2, 3]


def _read_twice_past_a_429(stub: LLMStub, retry_after: int) -> list[float]:
    """The provider's answers: a read, a 429 asking for ``retry_after`` s, a read, the
    finish. Returns the times it was asked, filled in as it is."""
    asked: list[float] = []
    read = Reply.tool_call(*READ)
    plan = [
        read,
        Reply.status(429, retry_after=retry_after),
        read,
        Reply.tool_call("finish", {"summary": "done"}),
    ]

    def answer(body: Any) -> Reply:
        asked.append(time.monotonic())
        return plan.pop(0)

    stub.default = answer
    return asked


async def test_a_handed_back_step_waits_out_the_providers_retry_after(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # Step 2's first answer is a 429 asking for 3 s: the batch hands step 2 back, and the
    # workflow asks the provider again no sooner than that, as a retried call would.
    asked = _read_twice_past_a_429(stub, 3)
    name = await _agent(sessionmaker, execution, WIDE)
    handle, result = await _run_to_end(client, settings, task_queue, stub, name, "read twice")
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 3)
    assert len(asked) == 4
    assert asked[2] - asked[1] >= 3.0 - 0.05
    assert _replied_at(await _whole(sessionmaker, handle.id)) == [1, 2, 3]
    # The workflow waited (a timer), not a retry of the call that took step 2.
    assert await _timers(handle) == 1


async def test_a_handed_back_steps_wait_survives_the_hand_over(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    """The session continued-as-new while it waited out the provider's Retry-After (its
    history grew heavy meanwhile): the next run asked the provider again at once, the wait
    forgotten. The time the provider asked for now travels in the carry."""
    asked = _read_twice_past_a_429(stub, WAITED)
    name = await _agent(sessionmaker, execution, WIDE)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(
            client,
            task_queue,
            session_input("read twice", agent_id=name, max_history_bytes=SMALL_HISTORY),
        )
        await until(lambda: len(asked) >= 2 or None, what="the provider's 429")
        after = await hand_over_while_waiting(handle)
        assert after.run_index > 1 and len(asked) == 2, (after, len(asked))
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 3)
    assert result.runs > 1
    assert len(asked) == 4
    assert asked[2] - asked[1] >= WAITED - 0.05, asked
    assert _replied_at(await _whole(sessionmaker, handle.id)) == [1, 2, 3]


WAITED = 20
"""The provider's Retry-After (s): long enough for a hand-over to happen within it."""
SMALL_HISTORY = 150_000
"""A run's history growth at which the session hands over (a few refused signals)."""


async def _timers(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(e.HasField("timer_started_event_attributes") for e in history.events)


async def test_a_handed_back_step_waits_no_longer_than_the_sessions_deadline(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # The provider asks for ten minutes; the session has seconds left: it ends at its
    # deadline, and the provider is not asked again.
    read = Reply.tool_call(*READ)
    plan = [read, Reply.status(429, retry_after=600), read]
    stub.default = lambda body: plan.pop(0)
    name = await _agent(sessionmaker, execution, WIDE, budget={"max_seconds": 6})
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("read on", agent_id=name))
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == SessionStatus.TIMED_OUT, result
    assert (result.steps, len(stub.requests)) == (1, 2)
    assert_whole(await transcript(sessionmaker, handle.id))


async def test_a_handed_back_step_is_taken_alone_when_a_message_came_meanwhile(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # Step 2 of the first call hangs well past a workflow task's heartbeat (~8 s after
    # the task began: the workflow hears of the message then), then fails. Step 2 is
    # taken again at once (begun, it goes first), but by itself: the message that waits
    # joins the transcript after it, and step 3 answers it. A batch would have gone on to
    # step 3 without it.
    note = "also check the tide table"
    read = Reply.tool_call(*READ)
    stub.enqueue(
        read,
        Reply.hang(16.0, then=Reply.garbage()),
        read,
        Reply.tool_call("finish", {"summary": "done"}),
        Reply.tool_call("finish", {"summary": "done again"}),
    )
    name = await _agent(sessionmaker, execution, WIDE)
    async with running_worker(
        client, stub_settings(settings, stub.url_openai, model_timeout_seconds=LONG * 2), task_queue
    ):
        handle = await start(client, task_queue, session_input("read and listen", agent_id=name))
        await until(lambda: len(stub.requests) >= 2 or None, what="step 2's first call")
        await handle.signal(names.SIG_MESSAGE, MessageInput(text=note, by="ops"))
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 3)

    def heard(i: int) -> bool:
        return any(note in str(m.get("content")) for m in stub.requests[i].body["messages"])

    assert len(stub.requests) == 4
    assert [heard(i) for i in range(4)] == [False, False, False, True]
    messages = await _whole(sessionmaker, handle.id)
    said = [(m.role, m.step) for m in messages if m.role in ("assistant", "user")]
    assert said == [("user", 0), ("assistant", 1), ("assistant", 2), ("user", 2), ("assistant", 3)]


async def test_a_batch_ends_at_a_step_that_needs_an_approval(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # Steps 1 and 2 read; step 3 writes, which needs a human's approval: the call stops
    # there, and no step after it is asked of the model until the approval comes.
    def reply(body: Any) -> Reply:
        done = _answered(body)
        if done < 2:
            return Reply.tool_call(*READ)
        if done == 2:
            return Reply.tool_call("write_artifact", {"name": "notes.txt", "content": "x"})
        return Reply.tool_call("finish", {"summary": "done"})

    stub.default = reply
    name = await _agent(
        sessionmaker, execution, WIDE, {"name": "write_artifact", "approval": "always"}
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("read, then write", agent_id=name))
        st = await approval_pending(handle, sessionmaker, "a3-0")
        assert (st.step, st.status) == (3, SessionStatus.WAITING_APPROVAL)
        await asyncio.sleep(0.5)
        assert len(stub.requests) == 3  # nothing past the step that waits
        assert await _model_calls(handle) == 1
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a3-0", by="ops"))
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 4)
    messages = await _whole(sessionmaker, handle.id)
    written = [m for m in messages if m.role == "tool" and m.name == "write_artifact"]
    assert len(written) == 1 and "error" not in written[0].content


async def test_a_pause_holds_the_session_where_its_record_ends(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # Quick plain steps without end, in batches of the default window: a pause lands at
    # the end of a batch (seen when the worker next hears from Temporal: the workflow task
    # it holds ends every ~8 s), and the session's count of steps is then the record's.
    stub.default = lambda body: Reply.tool_call(*READ)
    name = await _agent(sessionmaker, execution, None, budget={"max_steps": 100_000})
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        # One run throughout (the pause may take a workflow task's ~8 s to be seen).
        handle = await start(
            client, task_queue, session_input("read on", agent_id=name, steps_per_run=100_000)
        )
        await until(lambda: len(stub.requests) >= 30 or None, what="thirty steps")
        await handle.signal(names.SIG_PAUSE, PauseInput(by="ops", reason="look"))
        st = await eventually(handle, lambda s: s.status == SessionStatus.PAUSED, timeout=LONG)
        asked = len(stub.requests)
        await asyncio.sleep(1.0)
        assert len(stub.requests) == asked  # the pause holds
        steps = _replied_at(await _whole(sessionmaker, handle.id))
        assert steps == list(range(1, st.step + 1))
        assert asked == st.step
        assert await _model_calls(handle) < st.step  # taken in batches
        # The pause's event says the step after which the session paused (it said the
        # step before the batch it came in, which the workflow knew then).
        [paused] = await events(sessionmaker, handle.id, "session_paused")
        assert paused.step == st.step
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()


async def test_a_session_cancelled_inside_a_batch_closes_what_the_call_recorded(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> None:
    # Steps 1 and 2 are recorded by the call, which then waits on the model for step 3.
    # The workflow knows only that step 1 is open; its ending goes after step 2's answer.
    stub.default = lambda body: (
        Reply.tool_call(*READ)
        if _answered(body) < 2
        else Reply.hang(LONG, then=Reply.tool_call("finish", {"summary": "done"}))
    )
    name = await _agent(sessionmaker, execution, WIDE)
    async with running_worker(
        client, stub_settings(settings, stub.url_openai, model_timeout_seconds=LONG * 2), task_queue
    ):
        handle = await start(client, task_queue, session_input("cancel me", agent_id=name))
        await until(lambda: len(stub.requests) >= 3 or None, what="the third model call")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
        assert isinstance(ended.value.cause, CancelledError)
        messages = await transcript(sessionmaker, handle.id)
        shown = (await handle.describe()).typed_search_attributes
    assert (shown.get(names.SA_STATUS), shown.get(names.SA_STEP)) == ("cancelled", 2)
    assert_whole(messages)
    assert [m.role for m in messages] == TWO_STEPS_ENDED
    assert messages[-1].content.startswith("Session ended: cancelled")
    model_events = await events(sessionmaker, handle.id, "model_call")
    assert sorted(e.key for e in model_events) == ["model:1", "model:2"]
    ended_events = await events(sessionmaker, handle.id, "session_ended")
    assert len(ended_events) == 1
    # The end is told at the last step the record holds, not the one the workflow knew,
    # and names the seq its message was written at (after what the call recorded).
    assert (messages[-1].step, ended_events[0].step) == (2, 2)
    assert ended_events[0].payload["seq"] == messages[-1].seq == 5
    assert (await session_row(sessionmaker, handle.id)).step == 2


SLOW_PAGE = 3.0
"""Seconds the first page of a fold takes to load: the session is cancelled meanwhile."""


def _two_fetches(stub: LLMStub) -> tuple[list[str], threading.Event]:
    """A first reply of two folded fetches of the stub's pages, the first slow, then
    ``finish``: the pages fetched, and an event set once the first one is loading."""
    fetched, loading = stub.slow_page("/slow", SLOW_PAGE)
    stub.enqueue(
        Reply.tool_calls(
            ("http_fetch", {"url": f"{stub.url}/slow"}),
            ("http_fetch", {"url": f"{stub.url}/after"}),
        )
    )
    stub.default = lambda body: Reply.tool_call("finish", {"summary": "done"})
    return fetched, loading


async def _cancelled_while_loading(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    execution: str,
) -> tuple[WorkflowHandle[Any, Any], list[str]]:
    """A session of ``_two_fetches`` (no approval asked, so both are folded into the
    model call), cancelled while its first page loads; returns once that page answered
    and a call that went on would have fetched the second."""
    fetched, loading = _two_fetches(stub)
    name = await _agent(sessionmaker, execution, WIDE, {"name": "http_fetch"})
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(
            client,
            task_queue,
            session_input("fetch two", agent_id=name, policy=ToolPolicy(require_approval=[])),
        )
        await until(lambda: loading.is_set() or None, what="the first page loading")
        await handle.cancel()
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()

        async def first_answered() -> bool:
            return any(e.key == "tool:1:0" for e in await events(sessionmaker, handle.id))

        # The first fetch's event (written once its page answered, after the end in the
        # default mode); a call that went on would fetch the second page right after it.
        await until(first_answered, within=60, what="the first fetch's event")
        await asyncio.sleep(1.0)
    return handle, fetched


async def test_a_folded_call_running_at_a_cancel_is_told_as_it_ran(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The default mode: the cancel ends the session while the first fetch runs. The
    # ending answers both calls; the first one finishes after it, the second never runs.
    handle, fetched = await _cancelled_while_loading(
        client, settings, task_queue, stub, sessionmaker, "activity"
    )
    with pytest.raises(WorkflowFailureError) as ended:
        await handle.result()
    assert isinstance(ended.value.cause, CancelledError)
    assert fetched == ["/slow"]
    messages = await _whole(sessionmaker, handle.id)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "system"]
    # The transcript does not say the first call did not run: it ran, and its event,
    # written after the end, says what it did. The second has no event: it never ran.
    assert [m.content for m in messages[2:4]] == [UNANSWERED, UNANSWERED]
    assert not any("not run" in m.content for m in messages[2:4])
    ran = {e.key: e.payload for e in await events(sessionmaker, handle.id, "tool_call")}
    assert list(ran) == ["tool:1:0"]
    assert ran["tool:1:0"]["ok"] is True
    assert ran["tool:1:0"]["output_preview"].startswith("HTTP 404")


async def test_a_cancel_seen_after_a_batch_ended_the_session_leaves_the_recorded_end(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The low-latency mode: the cancel is seen when the workflow task ends, here once the
    # local call returns, and by then its batch has taken both fetches and the finish.
    # The session ends as its record says, and its result and search attributes count
    # the steps the record holds (they counted none: the call's result was never applied).
    handle, fetched = await _cancelled_while_loading(
        client, settings, task_queue, stub, sessionmaker, "local"
    )
    result: SessionResult = await handle.result()
    assert fetched == ["/slow", "/after"]
    row = await session_row(sessionmaker, handle.id)
    assert (result.status, row.status) == (SessionStatus.COMPLETED, "completed")
    assert result.steps == row.step == 2
    assert (result.tokens_in, result.tokens_out) == (row.tokens_in, row.tokens_out) != (0, 0)
    shown = (await handle.describe()).typed_search_attributes
    assert (shown.get(names.SA_STATUS), shown.get(names.SA_STEP)) == ("completed", 2)
    assert_whole(await transcript(sessionmaker, handle.id))


async def _recorded_session(
    sessionmaker: async_sessionmaker[DbSession], *messages: record.NewMessage
) -> tuple[str, str]:
    """A running session's record: its goal ("g") at seq 0, then ``messages``. Returns
    its agent's id and its id."""
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(db, session_id=sid, agent_id=agent, goal="g", status="running")
        goal = record.NewMessage(seq=0, role="user", content="g")
        await record.append_messages(db, sid, agent, [goal, *messages])
    return agent, sid


def _reply(seq: int, step: int) -> record.NewMessage:
    """A recorded reply of step ``step`` at ``seq`` that calls ``read_artifact`` once."""
    call = {"id": f"c{step}", "name": "read_artifact", "arguments": "{}"}
    return record.NewMessage(
        seq=seq, role="assistant", content=f"step {step}", step=step, tool_calls=[call]
    )


_ANSWER = record.NewMessage(
    seq=2, role="tool", content="read", step=1, name="read_artifact", tool_call_id="c1"
)
"""Step 1's answer (to ``_reply(1, 1)``)."""


async def test_an_ending_closes_a_batchs_steps_and_writes_the_same_rows_when_tried_again(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The workflow knew step 1 (seq 1) was open; the call also recorded step 2 (seq 3),
    # whose call has no answer yet. The ending's message was queued at seq 2.
    agent, sid = await _recorded_session(sessionmaker, _reply(1, 1), _ANSWER, _reply(3, 2))
    end = record.NewMessage(seq=2, role="system", content="Session ended: cancelled.")
    placed = []
    for _ in range(2):  # the ending's write, then a retry of it once it committed
        async with sessionmaker.begin() as db:
            closed = await close_open_step(db, sid, agent, 1, [end])
            await record.append_messages(db, sid, agent, closed.rest)
        placed.append([(m.seq, m.role, m.step) for m in closed.rest])
        assert closed.last_step == 2
    # The retry finds the answer written and puts the end where the first try did, at
    # the last step recorded.
    assert placed == [[(4, "tool", 2), (5, "system", 2)], [(5, "system", 2)]]
    messages = await _whole(sessionmaker, sid)
    assert [m.role for m in messages] == TWO_STEPS_ENDED
    assert messages[4].content == UNANSWERED


async def test_an_ending_inside_a_batch_names_the_seq_its_message_was_written_at(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    # The record activity writes the ending of a session cancelled inside a batch: the
    # workflow knew step 1 (seq 1) was open and queued its end message at seq 2; the call
    # also recorded step 2 (seq 3). The end message moves to seq 5, and its event names
    # that seq, written again by a retry of the ending that finds its rows there.
    agent, sid = await _recorded_session(sessionmaker, _reply(1, 1), _ANSWER, _reply(3, 2))
    summary = "cancelled by a human"
    ending = RecordInput(
        session_id=sid,
        agent_id=agent,
        messages=[
            MessageIn(seq=1, role="assistant", content="[no reply recorded]", step=1),
            MessageIn(
                seq=2,
                role="system",
                content=f"Session ended: cancelled. {summary}",
                step=1,
                name="vigil",
            ),
        ],
        events=[
            EventIn(
                key="session:ended:cancelled",
                kind=event_kinds.SESSION_ENDED,
                step=1,
                payload={"status": "cancelled", "summary": summary},
            )
        ],
        session=SessionUpdate(
            status=SessionStatus.CANCELLED, step=1, summary=summary, finished=True, run_count=1
        ),
        open_step_seq=1,
    )
    env = ActivityEnvironment()
    async with httpx.AsyncClient() as http:
        acts = SessionActivities(
            settings=settings,
            sessionmaker=sessionmaker,
            store=make_store(settings),
            provider=ZeroModel(),
            http=http,
        )
        first = await env.run(acts.record, ending)
        again = await env.run(acts.record, ending)  # a retry once the first committed
    assert (first.inserted_messages, first.inserted_events, first.last_step) == (2, 1, 2)
    assert (again.inserted_messages, again.inserted_events, again.last_step) == (0, 0, 2)
    messages = await _whole(sessionmaker, sid)
    assert [m.role for m in messages] == TWO_STEPS_ENDED
    end = messages[-1]
    assert (end.seq, end.name, end.step) == (5, "vigil", 2)
    (ended,) = await events(sessionmaker, sid, event_kinds.SESSION_ENDED)
    assert ended.step == 2
    assert ended.payload["seq"] == end.seq
    assert ended.payload["run_id"] == env.info.workflow_run_id
    assert (await session_row(sessionmaker, sid)).status == "cancelled"


async def test_an_ending_whose_step_recorded_no_reply_counts_no_step(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The model call recorded nothing: the ending's stand-in takes the reply's seq, and
    # the step it stands in for was never taken.
    agent, sid = await _recorded_session(sessionmaker)
    stand_in = record.NewMessage(
        seq=1, role="assistant", content="[no reply recorded: cancelled]", step=1
    )
    end = record.NewMessage(seq=2, role="system", content="Session ended: cancelled.")
    async with sessionmaker.begin() as db:
        closed = await close_open_step(db, sid, agent, 1, [stand_in, end])
        await record.append_messages(db, sid, agent, closed.rest)
    assert closed.last_step is None
    assert [(m.seq, m.step) for m in closed.rest] == [(2, 0)]
    messages = await _whole(sessionmaker, sid)
    assert [m.role for m in messages] == ["user", "assistant", "system"]
