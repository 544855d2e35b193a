"""Controls that meet a session as it closes, or after: each says what became of the
session in vigil's words, and none is taken as if it had acted."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus

from tests.support.held_end import end_event_held
from tests.support.llm_stub import LLMStub, Reply
from tests.support.locks import waiting_for_lock
from tests.support.sessions import (
    approval_pending,
    running_worker,
    session_input,
    start,
    stub_settings,
    until,
    wait_status,
)
from vigil.schema.payloads import SessionStatus, ToolPolicy
from vigil.workers.client import Refused, VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def _waiting_for_approval(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> str:
    """A session waiting for an approval, its worker stopped (Temporal still lists it as
    polling for a while, so controls are sent, and wait)."""
    stub.enqueue(Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}))
    config = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    arg = session_input("fetch the page").model_copy(
        update={"policy": ToolPolicy(require_approval=["http_fetch"])}
    )
    async with running_worker(client, config, task_queue):
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker)
    return handle.id


async def test_an_approval_the_closing_session_never_took_says_how_it_ended(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
) -> None:
    """An approval Temporal holds for the worker while the session closes is answered with
    how the session ended (before: "is not running (waiting_approval): workflow update was
    aborted by closing workflow", Temporal's words and a status it no longer had); a
    control of a session that closed before any worker recorded it says it ended (before:
    "no session with id", as if there were none)."""
    sid = await _waiting_for_approval(client, settings, task_queue, stub, sessionmaker)
    sent = asyncio.create_task(vigil_client.approve(sid, "a1-0", by="ana"))
    await asyncio.sleep(1)
    await client.get_workflow_handle(sid).terminate(reason="closed under the approval")
    with pytest.raises(Refused) as refused:
        await sent
    assert str(refused.value) == f"refused by session {sid}: the session has ended (terminated)"

    never = await start(client, f"{task_queue}-nobody", session_input("never ran"))
    await never.terminate(reason="before any worker")
    with pytest.raises(Refused) as refused:
        await vigil_client.say(never.id, "hello?", by="ana")
    assert str(refused.value) == (
        f"refused by session {never.id}: the session has ended (terminated)"
    )


async def test_a_second_cancel_while_the_first_is_pending_is_refused(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
) -> None:
    """A cancel sent while an earlier one has not ended the session yet (no worker has
    taken it) is refused with what is going on (before: accepted, as if it had acted); the
    first still ends the session once a worker runs it."""
    sid = await _waiting_for_approval(client, settings, task_queue, stub, sessionmaker)
    await vigil_client.cancel(sid, by="ana", reason="wrong customer")
    with pytest.raises(Refused) as refused:
        await vigil_client.cancel(sid, by="bob", reason="me too")
    assert str(refused.value) == (
        f"session {sid!r} is being cancelled already; it ends once a worker has written its "
        "last records"
    )
    config = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, config, task_queue):
        assert (
            await until(
                lambda: _final(vigil_client, sid), within=60, what="the session ends cancelled"
            )
            == "cancelled"
        )


async def _final(vigil_client: VigilClient, sid: str) -> str | None:
    status = await vigil_client.status(sid)
    return status if status in ("cancelled", "completed", "failed") else None


async def test_a_decision_while_the_end_is_written_says_the_session_ended(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
    database_url: str,
) -> None:
    """An approval or a rejection that reaches a session cancelled while it waited for it,
    as the session writes its end, is refused with how the session ended, as a signal is
    (before: "unknown approval id 'a1-0' (pending: none)", as if the id were wrong)."""
    stub.enqueue(Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}))
    config = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    arg = session_input("fetch the page").model_copy(
        update={"policy": ToolPolicy(require_approval=["http_fetch"])}
    )
    async with running_worker(client, config, task_queue):
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker)
        async with end_event_held(sessionmaker, handle.id, "agent-test", "cancelled"):
            await handle.cancel()
            await until(lambda: waiting_for_lock(database_url), what="the held end")
            for decide in (
                lambda: vigil_client.approve(handle.id, "a1-0", by="ana"),
                lambda: vigil_client.reject(handle.id, "a1-0", by="bob", reason="no"),
            ):
                with pytest.raises(Refused) as refused:
                    await decide()
                assert str(refused.value) == (
                    f"refused by session {handle.id}: the session has ended (cancelled)"
                )
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_a_wake_while_the_end_is_written_says_the_session_ended(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
    database_url: str,
) -> None:
    """A wake that reaches a sleeping session cancelled meanwhile, as it writes its end, is
    refused with how it ended (before: "the session is not sleeping")."""
    stub.enqueue(Reply.tool_call("wait_until", {"seconds": 3600, "reason": "later"}))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("sleep"))
        await wait_status(handle, SessionStatus.SLEEPING)
        async with end_event_held(sessionmaker, handle.id, "agent-test", "cancelled"):
            await handle.cancel()
            await until(lambda: waiting_for_lock(database_url), what="the held end")
            with pytest.raises(Refused) as refused:
                await vigil_client.wake(handle.id, by="ana")
            assert str(refused.value) == (
                f"refused by session {handle.id}: the session has ended (cancelled)"
            )
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
