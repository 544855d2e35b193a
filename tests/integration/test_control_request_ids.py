"""A control no worker answers in time is left with Temporal as a signal, and the session
takes it once.

Temporal keeps an update only in memory until a worker takes it: a control sent while the
session's worker was gone (Temporal still listing it for a while) waited its 30 s, said
that Temporal "may still hand it" to a worker, and a restart of Temporal in between lost
it (the pause never happened, the message never arrived). The client now sends the same
request as a signal, which is in the session's history at once; both name the request,
and the session takes it once, whichever comes first, however often it comes.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    eventually,
    running_worker,
    session_input,
    start,
    stub_settings,
    until,
)
from vigil.activities.record.rls import acting_for
from vigil.activities.record.store import list_events, messages_page
from vigil.schema import event_kinds, names
from vigil.schema.payloads import (
    Ack,
    ApproveInput,
    MessageInput,
    PauseInput,
    ResumeInput,
    SessionStatus,
    ToolPolicy,
)
from vigil.workers import liveness
from vigil.workers.client import VigilClient
from vigil.workers.keyed import answer, message_by_key
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_an_unanswered_control_is_left_as_a_signal_and_taken_once(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "fetched"}),
    )
    config = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    arg = session_input("fetch the page").model_copy(
        update={"policy": ToolPolicy(require_approval=["http_fetch"])}
    )
    async with running_worker(client, config, task_queue):
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker)
    sid = handle.id
    # Its worker is gone; Temporal lists it for a while, so the controls are sent as
    # updates, and wait (2 s here, 30 in use).
    monkeypatch.setattr(liveness, "CONTROL_WAIT_SECONDS", 2.0)
    said = await vigil_client.say(sid, "also check the disk", by="ana")
    approved = await vigil_client.approve(sid, "a1-0", by="ana")
    for ack in (said, approved):
        assert ack is not None and ack.queued and not ack.accepted, ack
        assert "left with Temporal as a signal" in ack.message
    # A third way in: one request sent twice as a signal, as a retrying sender would.
    again = MessageInput(text="also check the disk", by="bo", request_id=uuid.uuid4().hex)
    await handle.signal(names.SIG_MESSAGE, again)
    await handle.signal(names.SIG_MESSAGE, again)

    async with running_worker(client, config, task_queue):
        # Each update Temporal still held, and its signal, reach the session: taken once.
        result = await asyncio.wait_for(handle.result(), 60)
        assert result.status.value == "completed", result
        async with acting_for(sessionmaker, arg.agent_id) as db:
            events = await list_events(db, sid)
            words = await messages_page(db, sid, limit=100)
        decided = [e for e in events if e.kind == event_kinds.APPROVAL_DECIDED]
        heard = [(m.name, m.content) for m in words if m.role == "user" and m.seq > 0]
        assert len(decided) == 1, decided
        assert sorted(heard) == [("ana", "also check the disk"), ("bo", "also check the disk")]
        # No second approval refused as decided already: the request was taken once.
        state = await vigil_client.state(sid)
        assert state.rejected_inputs == 0
        # Both ways reached the session: each update Temporal held, and its signal.
        history = [e async for e in handle.fetch_history_events()]
        updates = [
            e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            for e in history
            if e.HasField("workflow_execution_update_accepted_event_attributes")
        ]
        signals = [
            e.workflow_execution_signaled_event_attributes.signal_name
            for e in history
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        assert sorted(updates) == [names.UPD_APPROVE, names.UPD_MESSAGE], updates
        assert sorted(signals) == [names.SIG_APPROVE] + [names.SIG_MESSAGE] * 3, signals


async def test_an_unanswered_keyed_message_goes_again_as_a_signal_and_is_taken_once(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message to a key's running session whose worker is gone: its update-with-start
    went unanswered, and was lost with a restart of Temporal."""
    stub.enqueue(Reply.text("first answer"), Reply.text("second answer"))
    config = stub_settings(settings, stub.url_openai)
    agent, key = f"keyed-{uuid.uuid4().hex[:6]}", "customer-7"
    keyed = settings.model_copy(update={"task_queue": task_queue})
    sender = VigilClient(keyed, vigil_client.temporal)
    try:
        async with running_worker(client, config, task_queue):
            first = await message_by_key(
                sender, agent, key, "hello", by="ana", allow_undefined=True
            )
            assert (await answer(sender, first, "hello", by="ana")) is not None
        monkeypatch.setattr(liveness, "CONTROL_WAIT_SECONDS", 2.0)
        sent = await asyncio.wait_for(
            message_by_key(sender, agent, key, "are you there", by="ana", allow_undefined=True), 60
        )
        assert sent.session_id == first.session_id and sent.queued and sent.ack.queued, sent
        async with running_worker(client, config, task_queue):

            async def heard() -> list[str] | None:
                async with acting_for(sessionmaker, agent) as db:
                    words = await messages_page(db, sent.session_id, limit=100)
                said = [m.content for m in words if m.role == "user" and m.name == "ana"]
                replies = [m for m in words if m.role == "assistant" and not m.tool_calls]
                return said if len(replies) >= 2 else None

            assert await until(heard, 30, "the second answer") == ["hello", "are you there"]
            await asyncio.sleep(1)
            assert await heard() == ["hello", "are you there"]  # taken once
            await vigil_client.cancel(sent.session_id, by="ana")
    finally:
        await sender.close()


async def test_requests_taken_in_one_run_are_not_taken_again_in_the_next(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """The ids a run took travel with continue-as-new: a sender retrying a request after
    the session moved on to a new run is answered, not obeyed twice."""
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/one"}),
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/two"}),
        Reply.tool_call("finish", {"summary": "fetched twice"}),
    )
    config = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    arg = session_input("fetch two pages", steps_per_run=1).model_copy(
        update={"policy": ToolPolicy(require_approval=["http_fetch"])}
    )
    said = MessageInput(text="the second page too", by="ana", request_id=uuid.uuid4().hex)
    pause = PauseInput(by="ana", request_id=uuid.uuid4().hex)
    async with running_worker(client, config, task_queue):
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker)
        await handle.signal(names.SIG_MESSAGE, said)
        first = await handle.execute_update(names.UPD_PAUSE, pause, result_type=Ack)
        await handle.execute_update(names.UPD_RESUME, ResumeInput(by="ana"))
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana"))
        second = await eventually(handle, lambda s: s.run_index == 2 and bool(s.pending_approvals))
        # The same requests again, as a sender that never heard back would send them.
        await handle.signal(names.SIG_MESSAGE, said)
        await handle.signal(names.SIG_PAUSE, pause)
        # And once more as an update, answered after the signals were handled: with the
        # first run's answer, not a second pause.
        again = await handle.execute_update(names.UPD_PAUSE, pause, result_type=Ack)
        assert again == first, (again, first)  # its state then: paused, waiting approval
        assert first.paused and first.status == SessionStatus.WAITING_APPROVAL, first
        now = await eventually(handle, lambda s: s.run_index == 2)
        assert not now.paused and now.rejected_inputs == 0, now
        await handle.execute_update(
            names.UPD_APPROVE,
            ApproveInput(approval_id=second.pending_approvals[0].approval_id, by="ana"),
        )
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status.value == "completed" and result.runs >= 2, result
    async with acting_for(sessionmaker, arg.agent_id) as db:
        words = await messages_page(db, handle.id, limit=100)
    heard = [m.content for m in words if m.role == "user" and m.name == "ana"]
    assert heard == ["the second page too"], heard
