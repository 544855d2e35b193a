"""The default worker's scripted model reacts to what its tools return.

Its demo script fetches a host the allowlist does not name: the tool answers with an
error, and the session must say so, never that the page was fetched; it ends failed (the
model finishes with ``succeeded`` false), and the outcome memory that later sessions
recall, a lesson, must hold the truth.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.sessions import events, running_worker, session_input, start
from vigil.schema.payloads import SessionResult, SessionStatus, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_failed_fetch_is_told_and_remembered_as_failed(
    client: Client,
    settings: Settings,
    task_queue: str,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-truth-{task_queue}"
    cfg = settings.model_copy(
        update={"model_provider": "scripted", "model_name": "scripted-1", "http_allow": ""}
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(
            client,
            task_queue,
            session_input(
                "take notes and check example.com",
                agent_id=agent,
                policy=ToolPolicy(require_approval=[]),
            ),
        )
        result: SessionResult = await handle.result()

    fetched = [
        e
        for e in await events(sessionmaker, handle.id, "tool_call")
        if e.payload["tool"] == "http_fetch"
    ]
    assert len(fetched) == 1 and fetched[0].payload["ok"] is False
    assert result.status == SessionStatus.FAILED, result
    summary = result.summary.lower()
    assert "http_fetch" in summary and "fail" in summary, result.summary
    assert "fetched https://example.com/" not in summary, result.summary

    async with sessionmaker() as db:
        (memory,) = (
            await db.execute(
                text("SELECT kind, content FROM memories WHERE source_session_id = :s"),
                {"s": handle.id},
            )
        ).all()
    kind, memory = memory
    assert kind == "lesson", (kind, memory)
    async with sessionmaker() as db:
        status = (
            await db.execute(text("SELECT status FROM sessions WHERE id = :s"), {"s": handle.id})
        ).scalar_one()
    assert status == "failed", status
    assert "http_fetch" in memory and "fail" in memory.lower(), memory
    assert "fetched https://example.com/" not in memory, memory
