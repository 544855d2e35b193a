"""A session paused before its worker first ran it: the pause is handled before the goal
is written, yet the export starts with the goal (a session begins with its goal), and the
pause follows it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.sessions import running_worker, session_input, start, until, wait_status
from vigil.activities.record import reads
from vigil.activities.record.rls import acting_for
from vigil.schema import names
from vigil.schema.payloads import PauseInput, SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def export_lines(
    sessionmaker: async_sessionmaker[DbSession], session_id: str, agent: str
) -> list[dict[str, object]]:
    async with sessionmaker() as db, acting_for(db, agent):
        return [json.loads(chunk) async for chunk in reads.export_jsonl(db, session_id)]


async def test_the_goal_comes_before_a_pause_sent_before_the_first_step(
    client: Client,
    settings: Settings,
    task_queue: str,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    arg = session_input("count the files", agent_id="paused-start")
    handle = await start(client, task_queue, arg)  # no worker polls yet
    await handle.signal(names.SIG_PAUSE, PauseInput(by="ana", reason="not yet"))
    async with running_worker(client, settings, task_queue):
        await wait_status(handle, SessionStatus.PAUSED)

        async def recorded() -> list[dict[str, object]] | None:
            lines = await export_lines(sessionmaker, handle.id, arg.agent_id)
            return lines if any(ln.get("kind") == "session_paused" for ln in lines) else None

        lines = await until(recorded, what="the pause in the record")
        await handle.cancel()
    said = [
        f"{ln['type']}:{ln.get('role') or ln.get('kind')}"
        for ln in lines
        if ln["type"] != "session"
    ]
    assert said[0] == "message:user", said
    assert lines[1]["content"] == "count the files"
    assert said.index("event:session_paused") > 0, said
