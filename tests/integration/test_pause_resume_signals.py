"""A ``resume`` signal to a session that is not paused, and a ``pause`` signal to one that
is, are refused as input and recorded (``input_rejected``, with the reason the updates'
validators give), like every other signal the session cannot take now. They were dropped
without a trace: the sender, who cannot hear a signal's answer, found nothing in the
record to say why the session did not do what they asked."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    events,
    eventually,
    running_worker,
    session_input,
    start,
    stub_settings,
    wait_status,
)
from vigil.schema import event_kinds, names
from vigil.schema.payloads import (
    PauseInput,
    ResumeInput,
    SessionResult,
    SessionStatus,
    ToolPolicy,
    WakeInput,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_resume_when_running_and_pause_when_paused_are_recorded_as_refused(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "settle"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai)
    arg = session_input("sleep, then finish", policy=ToolPolicy(require_approval=[]))
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, arg)
        await wait_status(handle, SessionStatus.SLEEPING)
        await handle.signal(names.SIG_RESUME, ResumeInput(by="ann"))
        await eventually(handle, lambda s: s.rejected_inputs == 1)
        await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="look"))
        await eventually(handle, lambda s: s.paused)
        await handle.signal(names.SIG_PAUSE, PauseInput(by="cy", reason="again"))
        await eventually(handle, lambda s: s.rejected_inputs == 2)
        await handle.signal(names.SIG_RESUME, ResumeInput(by="bob"))
        await eventually(handle, lambda s: not s.paused)
        await handle.signal(names.SIG_WAKE, WakeInput(by="bob"))
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    kinds = {
        event_kinds.INPUT_REJECTED,
        event_kinds.SESSION_PAUSED,
        event_kinds.SESSION_RESUMED,
    }
    seen = [
        (e.kind, e.reason, (e.payload or {}).get("by"), e.actor)
        for e in await events(sessionmaker, handle.id)
        if e.kind in kinds
    ]
    assert seen == [
        (event_kinds.INPUT_REJECTED, "the session is not paused", "ann", None),
        (event_kinds.SESSION_PAUSED, "look", None, "bob"),
        (event_kinds.INPUT_REJECTED, "already paused", "cy", None),
        (event_kinds.SESSION_RESUMED, None, None, "bob"),
    ], seen
