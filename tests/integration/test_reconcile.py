"""The record converges with Temporal when a session ends outside vigil's control.

A workflow terminated, timed out or deleted by an operator never writes its ending, so its
sessions row kept saying `waiting_approval` with no end (issue 9, defect 3). The
reconciler finds rows that are not final while their workflow is closed or gone, marks
them with the final status, answers what the step left open so the transcript stays
whole, and records why in a `session_reconciled` event. It runs from `vigil reconcile`
and periodically in every `vigil worker`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from tests.integration.conftest import CLIStack
from tests.support.cli import explain, read_record, wait_approval
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    running_worker,
    session_input,
    session_row,
    stub_settings,
    transcript,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import ToolPolicy
from vigil.workers.reconcile import reconcile, reconcile_periodically
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration

POLICY = ToolPolicy(require_approval=["write_artifact"])


def _plan(stub: LLMStub) -> None:
    """One step: the sessions here never get past its approval."""
    stub.enqueue(
        Reply.tool_calls(
            ("write_artifact", {"name": "a.md", "content": "a"}),
            ("remember", {"content": "after the artifact"}),
        )
    )


async def _waiting(
    client: Client, task_queue: str, sm: async_sessionmaker[DbSession], **start: Any
) -> WorkflowHandle[Any, Any]:
    handle = await client.start_workflow(
        names.WORKFLOW_SESSION,
        session_input("write something", policy=POLICY),
        id=f"test-reconcile-{uuid.uuid4()}",
        task_queue=task_queue,
        **start,
    )
    await approval_pending(handle, sm)
    return handle


async def _assert_ended(sm: async_sessionmaker[DbSession], sid: str, status: str, why: str) -> None:
    row = await session_row(sm, sid)
    assert (row.status, row.finished_at is not None) == (status, True), row
    assert row.summary is not None and why in row.summary, row.summary
    found = await events(sm, sid, "session_reconciled")
    assert len(found) == 1, found
    assert found[0].payload["previous_status"] == "waiting_approval"
    assert why in (found[0].reason or ""), found[0]
    messages = await transcript(sm, sid)
    assert_whole(messages)  # the pending call and the later one are answered
    answers = [m.content for m in messages if m.role == "tool"]
    assert answers == [f"error: no result recorded: the session ended ({status}) first"] * 2
    assert messages[-1].role == "system" and messages[-1].content.startswith(
        f"Session ended: {status}."
    )


async def test_a_terminated_session_is_reconciled(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _plan(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await _waiting(client, task_queue, sessionmaker)
        await handle.terminate(reason="operator: runaway session")
        # The defect: Temporal says terminated, the record still waits.
        assert (await session_row(sessionmaker, handle.id)).status == "waiting_approval"

        done = await reconcile(client, sessionmaker, session_ids=[handle.id])
        assert [(r.previous_status, r.status, r.temporal_status) for r in done] == [
            ("waiting_approval", "terminated", "terminated")
        ]
        await _assert_ended(sessionmaker, handle.id, "terminated", "operator: runaway session")
        assert await reconcile(client, sessionmaker, session_ids=[handle.id]) == []
        assert len(await events(sessionmaker, handle.id, "session_reconciled")) == 1


async def test_a_terminated_session_whose_id_was_started_again_is_reconciled(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A session terminated before the reconciler saw it, then a workflow started again
    under its id (refused as an earlier session's): the newest run's failure is not the
    session's end (it closed the record as "failed: belongs to an earlier session")."""
    _plan(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await _waiting(client, task_queue, sessionmaker)
        await handle.terminate(reason="operator: runaway session")
        again = await client.start_workflow(
            names.WORKFLOW_SESSION,
            session_input("write something", policy=POLICY),
            id=handle.id,
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(again.result(), 60)
        done = await reconcile(client, sessionmaker, session_ids=[handle.id])
    assert [(r.previous_status, r.status) for r in done] == [("waiting_approval", "terminated")]
    await _assert_ended(sessionmaker, handle.id, "terminated", "closed in Temporal without")


async def test_timed_out_and_deleted_sessions_are_reconciled(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _plan(stub)
    _plan(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        timing_out = await _waiting(
            client, task_queue, sessionmaker, execution_timeout=timedelta(seconds=3)
        )
        deleted = await _waiting(client, task_queue, sessionmaker)
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=deleted.id),
            )
        )
        await until(lambda: _gone(deleted), what="the deleted workflow gone")
        await until(lambda: _closed(timing_out), what="the execution timeout")

        ids = [timing_out.id, deleted.id]
        done = {r.session_id: r for r in await reconcile(client, sessionmaker, session_ids=ids)}
    assert (done[timing_out.id].status, done[timing_out.id].temporal_status) == (
        "timed_out",
        "timed_out",
    )
    assert (done[deleted.id].status, done[deleted.id].temporal_status) == (
        "terminated",
        "not_found",
    )
    await _assert_ended(sessionmaker, timing_out.id, "timed_out", "execution timeout")
    await _assert_ended(sessionmaker, deleted.id, "terminated", "no longer exists in Temporal")


async def test_workers_reconcile_periodically(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _plan(stub)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await _waiting(client, task_queue, sessionmaker)
        loop = asyncio.create_task(
            reconcile_periodically(client, sessionmaker, every=0.2, idle=timedelta(0))
        )
        try:
            await handle.terminate(reason="operator: stop it")

            async def ended() -> bool:
                return (await session_row(sessionmaker, handle.id)).status == "terminated"

            await until(ended, what="reconciled by the loop")
        finally:
            loop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await loop
    await _assert_ended(sessionmaker, handle.id, "terminated", "operator: stop it")


def test_vigil_reconcile(cli: CLIStack) -> None:
    goal = cli.plan(Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}))
    sid = cli.vigil.json("start", goal, "--agent", "rec", "--approve-tools", "write_artifact")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    asyncio.run(_terminate(cli.settings, sid))
    done = cli.vigil("reconcile", "--json")
    assert done.returncode == 0, explain(done)
    found = [r for r in json.loads(done.stdout) if r["session_id"] == sid]
    assert [(r["previous_status"], r["status"]) for r in found] == [
        ("waiting_approval", "terminated")
    ], found
    row, _messages, evs = read_record(cli.database_url, sid)
    assert row.status == "terminated"
    assert [e.kind for e in evs if e.kind == "session_reconciled"] == ["session_reconciled"]
    human = cli.vigil("reconcile")
    assert human.returncode == 0, explain(human)
    assert sid not in human.stdout  # already converged


async def _terminate(settings: Settings, sid: str) -> None:
    temporal = await connect(settings)
    await temporal.get_workflow_handle(sid).terminate(reason="operator: from the CLI test")


async def _gone(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        await handle.describe()
    except RPCError as exc:
        return exc.status == RPCStatusCode.NOT_FOUND
    return False


async def _closed(handle: WorkflowHandle[Any, Any]) -> bool:
    desc = await handle.describe()
    return desc.close_time is not None
