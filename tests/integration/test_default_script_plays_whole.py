"""Every turn of the scripted model's default script is played, and the session ends as
its last turn says.

A ``say`` turn ends the session (a reply without a tool call is the final answer), so a
turn after one is never played: this runs the script through a real session, the fetch
aimed at a local page instead of https://example.com/ (no network here) and approved as
a human would, and counts the model's replies in the record.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub
from tests.support.sessions import eventually, running_worker, session_input, start, transcript
from vigil.activities.models.scripted import DEMO_SCRIPT, LAST_RESULT, ScriptedProvider
from vigil.schema import names
from vigil.schema.payloads import ApproveInput, SessionResult, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _ending(turn: dict[str, Any]) -> tuple[SessionStatus, str]:
    """How a last turn ends the session: its status, and the start of its summary (up to
    where the latest tool result is filled in)."""
    if "say" in turn:
        return SessionStatus.COMPLETED, turn["say"].split(LAST_RESULT)[0]
    assert turn.get("tool") == "finish", f"the last turn neither says nor finishes: {turn}"
    args = turn.get("args", {})
    status = SessionStatus.FAILED if args.get("succeeded") is False else SessionStatus.COMPLETED
    return status, str(args.get("summary", "")).split(LAST_RESULT)[0]


async def test_every_turn_of_the_default_script_is_played(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    script = json.loads(json.dumps(DEMO_SCRIPT).replace("https://example.com/", f"{stub.url}/"))
    cfg = settings.model_copy(update={"http_allow": stub.host_port})
    async with running_worker(client, cfg, task_queue, ScriptedProvider(script)):
        handle = await start(client, task_queue, session_input("take notes and check a page"))
        waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
        (pending,) = waiting.pending_approvals
        assert pending.tool == "http_fetch", pending
        await handle.signal(
            names.SIG_APPROVE, ApproveInput(approval_id=pending.approval_id, by="alice")
        )
        result: SessionResult = await handle.result()

    replies = [m for m in await transcript(sessionmaker, handle.id) if m.role == "assistant"]
    played = len(replies)
    assert played == len(script), (
        f"{played} of the script's {len(script)} turns played; never reached: {script[played:]}"
    )
    status, summary = _ending(script[-1])
    assert result.status == status, result
    assert result.summary.startswith(summary), (result.summary, summary)
    assert LAST_RESULT not in result.summary
