"""An MCP tool with effects outside vigil (not marked read-only) waits for a human's
approval: nothing reaches the server before it, the approved call runs after it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.agent_tools import apply_agent, worker_settings
from tests.support.llm_stub import LLMStub, Reply
from tests.support.mcp_probe import stdio_spec
from tests.support.sessions import (
    approval_pending,
    events,
    running_worker,
    session_input,
    start,
)
from vigil.schema import names
from vigil.schema.agents import call_digest
from vigil.schema.payloads import ApproveInput, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_an_external_mcp_tool_runs_after_approval(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, [], [stdio_spec(tools=["append_line", "echo"])]
    )
    target = tmp_path / "outside.txt"
    args = {"path": str(target), "line": "approved change"}
    stub.enqueue(
        Reply.tool_call("probe__append_line", args),
        Reply.tool_call("finish", {"summary": "changed the file"}),
    )
    async with running_worker(client, worker_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("change", agent_id=agent.name))
        state = await approval_pending(handle, sessionmaker)
        (pending,) = state.pending_approvals
        assert pending.tool == "probe.append_line"
        assert pending.digest == call_digest("probe.append_line", args)
        assert state.status == SessionStatus.WAITING_APPROVAL
        assert not target.exists()  # nothing ran before a human said yes

        await handle.execute_update(
            names.UPD_APPROVE,
            ApproveInput(approval_id=pending.approval_id, by="ann", digest=pending.digest),
        )
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert target.read_text() == "approved change\n"
    (ran,) = await events(sessionmaker, handle.id, "tool_call")
    assert ran.payload["tool"] == "probe.append_line" and ran.payload["ok"] is True
    assert ran.payload["output_preview"] == "appended to outside.txt"
    (decided,) = await events(sessionmaker, handle.id, "approval_decided")
    assert (decided.actor, decided.payload["decision"]) == ("ann", "approve")
