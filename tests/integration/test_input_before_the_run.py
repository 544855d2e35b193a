"""Input a run handles before its code starts is checked and kept like any other.

Temporal runs the signal and update handlers of a run's first task before the workflow's
``run`` method: a signal sent with the start, or one that reaches a run whose first task
had not been taken yet (a run that took over a wait from the last one; a run reset to its
first task, as ``temporal workflow reset --type FirstWorkflowTask`` does). Before,
such input met a run that had not yet decided which of its patches it takes: a wake was
recorded and then forgotten (the session slept on), an approval's digest was not checked,
and a redirect to an agent version was refused as if the session predated versions.

The tests put the input there for certain: the worker is stopped while the session waits,
its current run is reset to its first task, the signal is sent, and a worker started
again takes the first task with the signal in it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import CancelledError

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    first_task_completed,
    hand_over_while_waiting,
    reset_to_first_task,
    running_worker,
    session_input,
    session_row,
    start,
    state,
    stub_settings,
    tool_messages,
    transcript,
    wait_status,
)
from vigil.schema import names
from vigil.schema.agents import AgentSpec
from vigil.schema.payloads import (
    ApproveInput,
    PendingApproval,
    RedirectInput,
    SessionResult,
    SessionState,
    SessionStatus,
    ToolPolicy,
    WakeInput,
)
from vigil.workers.agents import AgentService
from vigil.workers.settings import Settings
from vigil.workflows.session import AgentSession

pytestmark = pytest.mark.integration

SMALL_HISTORY = 150_000


async def first_task_signals(client: Client, workflow_id: str) -> list[str]:
    """The signals the current run's history holds before its first completed task."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    names_seen: list[str] = []
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            break
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            names_seen.append(e.workflow_execution_signaled_event_attributes.signal_name)
    return names_seen


async def test_a_wake_in_the_first_task_of_a_run_that_took_over_a_sleep_wakes_it(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "let it settle"}),
        Reply.tool_call("finish", {"summary": "woke and finished"}),
    )
    cfg = stub_settings(settings, stub.url_openai)
    arg = session_input(
        "sleep an hour",
        max_history_bytes=SMALL_HISTORY,
        policy=ToolPolicy(require_approval=[]),
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, arg)
        await wait_status(handle, SessionStatus.SLEEPING)
        await hand_over_while_waiting(handle)
        await first_task_completed(client, handle)
    await reset_to_first_task(client, handle)
    handle = client.get_workflow_handle_for(AgentSession.run, handle.id)  # the reset run
    await handle.signal(names.SIG_WAKE, WakeInput(by="carol", reason="enough"))
    assert await first_task_signals(client, handle.id) == [names.SIG_WAKE]
    async with running_worker(client, cfg, task_queue):
        # Before: the wake was recorded, and the session slept on for its hour.
        result: SessionResult = await _result_within(handle, 60)

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert tool_messages(messages)[0].content.startswith("woken early by carol")


async def test_an_approval_in_a_runs_first_task_is_held_to_the_calls_digest(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    cfg = stub_settings(settings, stub.url_openai)
    handle, pending, before = await _approval_reset_to_its_runs_first_task(
        client, cfg, task_queue, stub, sessionmaker
    )
    wrong = "0" * len(pending.digest or "0" * 64)
    await handle.signal(
        names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="mallory", digest=wrong)
    )
    assert await first_task_signals(client, handle.id) == [names.SIG_APPROVE]
    async with running_worker(client, cfg, task_queue):
        # Before: the approval was taken without its digest checked, and the call ran.
        st = await eventually(handle, lambda s: s.rejected_inputs > before.rejected_inputs)
        assert st.status == SessionStatus.WAITING_APPROVAL
        assert [p.approval_id for p in st.pending_approvals] == ["a1-0"]
        await handle.signal(
            names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice", digest=pending.digest)
        )
        result: SessionResult = await _result_within(handle, 60)

    assert result.status == SessionStatus.COMPLETED
    refused = await events(sessionmaker, handle.id, "input_rejected")
    assert any("is for the call with digest" in (e.reason or "") for e in refused)
    decided = await events(sessionmaker, handle.id, "approval_decided")
    assert [e.actor for e in decided] == ["alice"]


async def test_edited_arguments_in_a_runs_first_task_are_refused_clearly(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Before the run has read its agent's definition, edited arguments cannot be checked
    against the tool's schema: they are refused with that reason, never run unchecked,
    and the approval stays open."""
    cfg = stub_settings(settings, stub.url_openai)
    handle, _, before = await _approval_reset_to_its_runs_first_task(
        client, cfg, task_queue, stub, sessionmaker
    )
    fits = {"name": "early.md", "content": "early"}  # fits the tool's schema
    await handle.signal(
        names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="mallory", edited_arguments=fits)
    )
    assert await first_task_signals(client, handle.id) == [names.SIG_APPROVE]
    async with running_worker(client, cfg, task_queue):
        st = await eventually(handle, lambda s: s.rejected_inputs > before.rejected_inputs)
        assert [p.approval_id for p in st.pending_approvals] == ["a1-0"]
        edited = {"name": "b.md", "content": "b"}
        await handle.signal(
            names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice", edited_arguments=edited)
        )
        result: SessionResult = await _result_within(handle, 60)

    assert result.status == SessionStatus.COMPLETED
    refused = await events(sessionmaker, handle.id, "input_rejected")
    reasons = [e.reason or "" for e in refused]
    assert any("cannot be checked yet" in r for r in reasons), reasons
    wrote = tool_messages(await transcript(sessionmaker, handle.id))[0]
    assert "b.md" in wrote.content and "early.md" not in wrote.content


async def test_a_redirect_sent_with_the_start_may_name_a_version(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    name = f"early-{uuid.uuid4().hex[:8]}"
    agents = AgentService(sessionmaker)
    for edition, tool in (("first", "read_artifact"), ("second", "recall")):
        await agents.apply_spec(
            AgentSpec.model_validate(
                {"name": name, "system_prompt": f"{edition}: {{goal}}", "tools": [{"name": tool}]}
            )
        )
    stub.enqueue(Reply.tool_call("finish", {"summary": "done"}))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await client.start_workflow(
            AgentSession.run,
            session_input("go", agent_id=name, agent_version=1),
            id=f"test-session-{uuid.uuid4()}",
            task_queue=task_queue,
            start_signal=names.SIG_REDIRECT,
            start_signal_args=[RedirectInput(goal="go on v2", by="ops", agent_version=2)],
        )
        result: SessionResult = await _result_within(handle, 60)
        st = await state(handle)

    # Before: refused ("this session predates agent definitions"), and it ran v1.
    assert st.rejected_inputs == 0
    assert result.status == SessionStatus.COMPLETED
    assert st.agent_version == 2
    body = next(r.body for r in stub.requests if r.path.endswith("/completions"))
    offered = [t["function"]["name"] for t in body["tools"]]
    assert "recall" in offered and "read_artifact" not in offered


async def test_a_redirect_sent_with_the_start_to_its_own_version_changes_nothing(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Before the run has read its version, a redirect naming the version it then reads
    is no move (before: the definition read twice, and a change from 1 to 1 recorded)."""
    name = f"early-{uuid.uuid4().hex[:8]}"
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate({"name": name, "system_prompt": "only: {goal}"})
    )
    stub.enqueue(Reply.tool_call("finish", {"summary": "done"}))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await client.start_workflow(
            AgentSession.run,
            session_input("go", agent_id=name),
            id=f"test-session-{uuid.uuid4()}",
            task_queue=task_queue,
            start_signal=names.SIG_REDIRECT,
            start_signal_args=[RedirectInput(goal="go on", by="ops", agent_version=1)],
        )
        result: SessionResult = await _result_within(handle, 60)
    assert result.status == SessionStatus.COMPLETED
    assert await events(sessionmaker, handle.id, "agent_version_changed") == []
    assert len(await events(sessionmaker, handle.id, "session_redirected")) == 1


async def test_a_later_run_cancelled_while_it_reads_its_agent_ends_recorded(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """The cancel lands in the first task of a run that took over an approval, while it
    reads its pinned agent again: the session still ends cancelled in the record, its open
    call closed (before: the workflow was cancelled and the record said it waited)."""
    name = f"early-{uuid.uuid4().hex[:8]}"  # defined: each run reads its version again
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {"name": name, "tools": [{"name": "write_artifact", "approval": "always"}]}
        )
    )
    cfg = stub_settings(settings, stub.url_openai)
    handle, _, _ = await _approval_reset_to_its_runs_first_task(
        client, cfg, task_queue, stub, sessionmaker, agent_id=name
    )
    await handle.cancel()
    async with running_worker(client, cfg, task_queue):
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    assert isinstance(failed.value.cause, CancelledError), failed.value.cause
    row = await session_row(sessionmaker, handle.id)
    assert row.status == SessionStatus.CANCELLED.value
    assert_whole(await transcript(sessionmaker, handle.id))
    ended = await events(sessionmaker, handle.id, "session_ended")
    assert [e.payload["status"] for e in ended] == ["cancelled"]


async def _approval_reset_to_its_runs_first_task(
    client: Client,
    cfg: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    agent_id: str = "agent-test",
) -> tuple[WorkflowHandle[Any, SessionResult], PendingApproval, SessionState]:
    """A session waiting for approval ``a1-0`` that handed its wait over to a second run,
    that run reset to its first task with no worker running: (the reset run, the pending
    approval, the state after the hand-over)."""
    stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}),
        Reply.tool_call("finish", {"summary": "wrote it"}),
    )
    arg = session_input(
        "write",
        agent_id=agent_id,
        max_history_bytes=SMALL_HISTORY,
        policy=ToolPolicy(require_approval=["write_artifact"]),
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, arg)
        pending = (await approval_pending(handle, sessionmaker)).pending_approvals[0]
        before = await hand_over_while_waiting(handle)
        await first_task_completed(client, handle)
    await reset_to_first_task(client, handle)
    reset = client.get_workflow_handle_for(AgentSession.run, handle.id)
    return reset, pending, before


async def _result_within(handle: WorkflowHandle[Any, Any], seconds: float) -> SessionResult:
    result: SessionResult = await asyncio.wait_for(handle.result(), seconds)
    return result


async def test_a_session_cancelled_before_its_first_task_is_recorded_cancelled(
    client: Client,
    settings: Settings,
    task_queue: str,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A cancel that reaches a session before a worker first ran it (the run's first task
    holds the start and the cancel): the record holds the session, ended cancelled."""
    handle = await start(client, task_queue, session_input("never mind"))  # no worker yet
    await handle.cancel()
    async with running_worker(client, settings, task_queue):
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 60)
    assert isinstance(failed.value.cause, CancelledError), failed.value.cause
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    row = await session_row(sessionmaker, handle.id)
    assert row.status == SessionStatus.CANCELLED.value
    ended = await events(sessionmaker, handle.id, "session_ended")
    assert [e.payload["status"] for e in ended] == ["cancelled"]
