"""A flood of oversized signals never kills a waiting session (issue 9, defect 3).

Temporal records every signal in history before the workflow can refuse it, so 27
`message` signals of 1.9 MB once took a session waiting for approval past the 50 MB
history limit and Temporal terminated it. The session now continues-as-new while it
waits when its history grows, carrying the wait across: the same approval id stays
valid, and the session ends normally later.
"""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    running_worker,
    session_input,
    session_row,
    start,
    state,
    stub_settings,
    tool_messages,
    transcript,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import (
    ApproveInput,
    MessageInput,
    SessionResult,
    SessionStatus,
    ToolPolicy,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

BIG = "x" * 1_900_000  # under Temporal's 2 MB payload limit, far over the 32 KiB text limit
SIGNALS = 30  # 57 MB: past the 50 MB history limit of one run


async def _rejected(sm: async_sessionmaker[DbSession], sid: str) -> int:
    return len(await events(sm, sid, "rejected_input"))


async def test_signals_of_1_9_mb_while_waiting_for_approval_never_end_the_session(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "plan.md", "content": "the plan"}),
        Reply.tool_call("finish", {"summary": "wrote the plan"}),
    )
    cfg = stub_settings(settings, stub.url_openai)
    policy = ToolPolicy(require_approval=["write_artifact"])
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("write a plan", policy=policy))
        await approval_pending(handle, sessionmaker)
        for n in range(1, SIGNALS + 1):
            await handle.signal(names.SIG_MESSAGE, MessageInput(text=BIG, by="mallory"))
            # One at a time, as a person (or a script) sends them: each is refused first.
            await until(
                partial(_rejected_at_least, sessionmaker, handle.id, n),
                within=60,
                what=f"signal {n} refused",
            )
        alive = await handle.describe()
        assert alive.status == WorkflowExecutionStatus.RUNNING, alive.status
        waiting = await state(handle)
        assert waiting.run_index > 1, "the session never handed over while waiting"
        assert waiting.status == SessionStatus.WAITING_APPROVAL
        assert [p.approval_id for p in waiting.pending_approvals] == ["a1-0"]
        assert waiting.rejected_inputs == SIGNALS
        assert (await session_row(sessionmaker, handle.id)).status == "waiting_approval"

        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    assert result.runs >= waiting.run_index
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    row = await session_row(sessionmaker, handle.id)
    assert (row.status, row.finished_at is not None) == ("completed", True)
    assert await _rejected(sessionmaker, handle.id) == SIGNALS
    requested = await events(sessionmaker, handle.id, "approval_requested")
    decided = await events(sessionmaker, handle.id, "approval_decided")
    assert [e.payload["approval_id"] for e in requested] == ["a1-0"]
    assert [(e.actor, e.payload["decision"]) for e in decided] == [("alice", "approve")]
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert tool_messages(messages)[0].content.startswith("stored artifact 'plan.md'")
    assert not any(BIG[:1000] in m.content for m in messages)


async def _rejected_at_least(sm: async_sessionmaker[DbSession], sid: str, n: int) -> bool:
    return await _rejected(sm, sid) >= n
