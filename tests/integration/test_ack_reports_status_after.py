"""An update's acknowledgement reports the session's state after the action, not before.

`vigil resume` used to answer `resumed (status paused)`: the status the handler saw, which
the loop changes right after. Each Ack now carries the status the action leads to, and
whether the session is paused.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    running_worker,
    session_input,
    start,
    stub_settings,
    wait_status,
)
from vigil.schema import names
from vigil.schema.payloads import (
    Ack,
    ApproveInput,
    PauseInput,
    ResumeInput,
    SessionStatus,
    WakeInput,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_acks_report_the_status_after_the_action(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "later"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch, pause, sleep"))
        await approval_pending(handle, sessionmaker)

        async def ack(update: str, arg: object) -> Ack:
            done: Ack = await handle.execute_update(update, arg, result_type=Ack)
            return done

        # Paused while it waits for approval: it still waits, and will hold after the step.
        paused = await ack(names.UPD_PAUSE, PauseInput(by="ana", reason="look"))
        assert (paused.status, paused.paused) == (SessionStatus.WAITING_APPROVAL, True)
        approved = await ack(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana"))
        assert (approved.status, approved.paused) == (SessionStatus.RUNNING, True)
        await wait_status(handle, SessionStatus.PAUSED)
        resumed = await ack(names.UPD_RESUME, ResumeInput(by="ana"))
        assert (resumed.status, resumed.paused) == (SessionStatus.RUNNING, False)
        await wait_status(handle, SessionStatus.SLEEPING)
        woken = await ack(names.UPD_WAKE, WakeInput(by="ana"))
        assert woken.status == SessionStatus.RUNNING
        assert (await handle.result()).status == SessionStatus.COMPLETED
