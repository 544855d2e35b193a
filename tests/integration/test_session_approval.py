"""A tool that needs approval stops the session until a human (or the policy) decides.

Approve and reject work as signals and as updates, an approval may edit the call's
arguments, a decision about an unknown approval is refused without a trace, and every
decision lands in the events table with who, when and why.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    running_worker,
    session_input,
    session_row,
    start,
    stub_settings,
    tool_messages,
    transcript,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import (
    Ack,
    ApproveInput,
    RejectInput,
    SessionResult,
    SessionStatus,
    ToolPolicy,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _fetch_then_finish(stub: LLMStub, path: str = "/page") -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}{path}"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )


def _cfg(settings: Settings, stub: LLMStub) -> Settings:
    return stub_settings(settings, stub.url_openai, http_allow=stub.host_port)


async def _decided(sm: async_sessionmaker[DbSession], sid: str) -> Any:
    found = await events(sm, sid, "approval_decided")
    assert len(found) == 1, found
    return found[0]


async def test_waits_for_approval_then_approve_signal(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _fetch_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        st = await approval_pending(handle, sessionmaker)
        assert [(p.approval_id, p.tool, p.step) for p in st.pending_approvals] == [
            ("a1-0", "http_fetch", 1)
        ]
        assert "/page" in st.pending_approvals[0].arguments_preview
        assert st.pending_approvals[0].expires_at > st.pending_approvals[0].requested_at
        # Waiting, not calling the model again.
        assert len(stub.requests) == 1
        await until(lambda: _status_is(sessionmaker, handle.id, "waiting_approval"))
        requested = await events(sessionmaker, handle.id, "approval_requested")
        assert [e.payload["approval_id"] for e in requested] == ["a1-0"]

        await handle.signal(
            names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice", note="looks fine")
        )
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    decided = await _decided(sessionmaker, handle.id)
    assert (decided.actor, decided.reason) == ("alice", "looks fine")
    assert decided.payload["decision"] == "approve" and decided.payload["at"]
    assert decided.created_at is not None
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    fetched = tool_messages(messages)[0]
    assert fetched.content.startswith("HTTP 404") and "GET /page" in fetched.content


async def test_approve_update_with_edited_arguments_runs_the_edited_call(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _fetch_then_finish(stub)
    edited = {"url": f"{stub.url}/edited"}
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        ack = await handle.execute_update(
            names.UPD_APPROVE,
            ApproveInput(
                approval_id="a1-0", by="alice", note="use the other page", edited_arguments=edited
            ),
            result_type=Ack,
        )
        assert ack.accepted and "a1-0" in ack.message
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    fetched = tool_messages(await transcript(sessionmaker, handle.id))[0]
    assert "GET /edited" in fetched.content and "/page" not in fetched.content
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert call.payload["arguments"] == edited and call.payload["edited"] is True
    decided = await _decided(sessionmaker, handle.id)
    assert decided.actor == "alice" and decided.payload["edited_arguments"] == edited
    # The model was told the result of the call that actually ran.
    assert "GET /edited" in stub.requests[1].body["messages"][-1]["content"]


@pytest.mark.parametrize("via", ["signal", "update"])
async def test_reject_goes_back_to_the_model(
    via: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _fetch_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        arg = RejectInput(approval_id="a1-0", by="bob", reason="too risky")
        if via == "signal":
            await handle.signal(names.SIG_REJECT, arg)
        else:
            ack = await handle.execute_update(names.UPD_REJECT, arg, result_type=Ack)
            assert ack.accepted
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    told = stub.requests[1].body["messages"][-1]
    assert told["role"] == "tool" and told["content"] == "error: rejected by bob: too risky"
    fetched = tool_messages(await transcript(sessionmaker, handle.id))[0]
    assert fetched.content == "error: rejected by bob: too risky"
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert call.payload["ok"] is False and call.payload["rejected"] is True
    decided = await _decided(sessionmaker, handle.id)
    assert (decided.actor, decided.reason, decided.payload["decision"]) == (
        "bob",
        "too risky",
        "reject",
    )


async def test_unknown_approval_id_is_refused_by_the_validator_and_writes_nothing(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _fetch_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        before = await events(sessionmaker, handle.id)
        for update, arg in [
            (names.UPD_APPROVE, ApproveInput(approval_id="nope", by="mallory")),
            (names.UPD_REJECT, RejectInput(approval_id="nope", by="mallory", reason="x")),
        ]:
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(update, arg, result_type=Ack)
            assert "unknown approval id 'nope'" in str(refused.value.cause)
            assert "a1-0" in str(refused.value.cause)  # says what is pending
        st = await approval_pending(handle, sessionmaker)
        assert [p.approval_id for p in st.pending_approvals] == ["a1-0"]
        assert st.rejected_inputs == 0
        assert await events(sessionmaker, handle.id) == before

        await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="al"), result_type=Ack
        )
        # The same id twice: already decided (or gone), refused as well.
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="al"), result_type=Ack
            )
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    recorded = await events(sessionmaker, handle.id)
    assert not [e for e in recorded if "mallory" in repr(e) or "nope" in repr(e)]
    assert [e.actor for e in recorded if e.kind == "approval_decided"] == ["al"]


@pytest.mark.parametrize(
    ("outcome", "status", "tool_result"),
    [
        ("reject", SessionStatus.COMPLETED, "error: rejected by policy: approval timed out"),
        ("approve", SessionStatus.COMPLETED, "HTTP 404"),
        ("fail", SessionStatus.FAILED, "error: not run: the session ended (failed) first"),
    ],
)
async def test_approval_timeout_follows_the_policy(
    outcome: str,
    status: SessionStatus,
    tool_result: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _fetch_then_finish(stub)
    policy = ToolPolicy.model_validate(
        {"approval_timeout_seconds": 2, "on_approval_timeout": outcome}
    )
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page", policy=policy))
        await approval_pending(handle, sessionmaker)
        result: SessionResult = await handle.result()

    assert result.status == status
    decided = await _decided(sessionmaker, handle.id)
    assert (decided.actor, decided.reason, decided.payload["decision"]) == (
        "policy",
        "approval timed out",
        outcome,
    )
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert tool_messages(messages)[0].content.startswith(tool_result)
    row = await session_row(sessionmaker, handle.id)
    assert row.status == status.value
    if outcome == "fail":
        assert result.summary == "approval a1-0 timed out"
        assert len(stub.requests) == 1
        assert messages[-1].role == "system" and "approval a1-0 timed out" in messages[-1].content
    else:
        assert len(stub.requests) == 2


async def _status_is(sm: async_sessionmaker[DbSession], sid: str, status: str) -> bool:
    row = await session_row(sm, sid)
    return row.status == status


async def test_a_decision_and_a_refused_one_taken_together_are_recorded_in_that_order(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """An approve and a reject that arrive in one workflow task: the first decides, the
    second is refused as already decided. The refusal was recorded first (it is written
    where it is taken, the decision once the waiting step woke), so the record said the
    reject was refused before anything had decided the approval."""
    _fetch_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
    # No worker: both wait in the history and reach the workflow in the same task.
    await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="ann"))
    await handle.signal(names.SIG_REJECT, RejectInput(approval_id="a1-0", by="bob", reason="no"))
    async with running_worker(client, _cfg(settings, stub), task_queue):
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED, result
    recorded = [e for e in await events(sessionmaker, handle.id) if e.step == 1]
    kinds = [(e.kind, e.actor or e.payload.get("by")) for e in recorded]
    decided = kinds.index(("approval_decided", "ann"))
    refused = kinds.index(("input_rejected", "bob"))
    assert decided < refused, kinds
    assert "already decided (approve)" in (recorded[refused].reason or "")


async def test_an_approval_taken_after_its_expiry_is_refused(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # No worker runs the session when its approval expires, nor when the approval comes
    # after that; the worker that comes back takes the late signal in the same task as
    # the expiry's timer, signals first: the call it approved ran, after its window.
    fetched, _ = stub.slow_page("/none", 0)
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    policy = ToolPolicy(approval_timeout_seconds=3)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch", policy=policy))
        await approval_pending(handle, sessionmaker)
    await asyncio.sleep(5)
    await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="late-ana"))
    async with running_worker(client, cfg, task_queue):
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    assert fetched == []  # the approved fetch never ran
    (refused,) = await events(sessionmaker, handle.id, "input_rejected")
    assert refused.payload["by"] == "late-ana" and "expired at" in (refused.reason or ""), refused
    (decided,) = await events(sessionmaker, handle.id, "approval_decided")
    assert decided.payload["decision"] == "reject", decided
    messages = await transcript(sessionmaker, handle.id)
    assert "approval timed out" in messages[2].content, messages[2].content
