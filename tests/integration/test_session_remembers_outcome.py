"""A session's outcome becomes long-term memory; a recurring goal's newest outcome wins."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, start, stub_settings
from vigil.schema.payloads import SessionResult, SessionStatus, StartSessionInput
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def _run(
    client: Client, cfg: Settings, task_queue: str, agent: str, goal: str = "check the tide table"
) -> str:
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, StartSessionInput(agent_id=agent, goal=goal))
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    return handle.id


async def test_outcomes_are_remembered_and_the_newest_supersedes(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-outcome-{task_queue}"
    cfg = stub_settings(settings, stub.url_openai)
    stub.enqueue(Reply.tool_call("finish", {"summary": "high tide at 06:10"}))
    first = await _run(client, cfg, task_queue, agent)
    stub.enqueue(Reply.tool_call("finish", {"summary": "high tide moved to 07:40"}))
    second = await _run(client, cfg, task_queue, agent)

    async with sessionmaker() as db:
        rows = (
            await db.execute(
                text(
                    "SELECT source_session_id, kind, content, superseded_by IS NOT NULL AS old "
                    "FROM memories WHERE agent_id = :a ORDER BY id"
                ),
                {"a": agent},
            )
        ).all()
    assert [(r.source_session_id, r.kind, r.old) for r in rows] == [
        (first, "reflection", True),
        (second, "reflection", False),
    ]
    assert "06:10" in rows[0].content and "07:40" in rows[1].content


async def test_a_goal_that_nfkc_spells_longer_is_still_remembered(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """U+FDFA is one character that NFKC spells as eighteen: the outcome's subject, cut
    from the goal, stays within the subject's limit once it is kept in that form."""
    agent = f"agent-outcome-wide-{task_queue}"
    cfg = stub_settings(settings, stub.url_openai)
    stub.enqueue(Reply.tool_call("finish", {"summary": "done"}))
    session_id = await _run(client, cfg, task_queue, agent, goal="\ufdfa" * 300)
    async with sessionmaker() as db:
        (row,) = (
            await db.execute(
                text("SELECT subject, source_session_id FROM memories WHERE agent_id = :a"),
                {"a": agent},
            )
        ).all()
    assert row.source_session_id == session_id
    assert row.subject.startswith("outcome: صلى الله عليه وسلم") and len(row.subject) <= 1000
