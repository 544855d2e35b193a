"""Messages and events written together in one call, in batches of any size: every row
once, in order, and a second write of the same rows inserts nothing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import store as record
from vigil.activities.record.rls import acting_for

pytestmark = pytest.mark.integration


async def test_a_batch_past_one_statement_is_written_whole_and_once(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(db, session_id=sid, agent_id=agent, goal="g", status="running")
    messages = [record.NewMessage(seq=s, role="user", content=f"m{s}\x00") for s in range(1200)]
    events = [record.NewEvent(key=f"k{i}", kind="note", reason=f"r{i}") for i in range(1100)]
    for expected in ((1200, 1100), (0, 0)):
        async with acting_for(sessionmaker, agent) as db:
            got = await record.append_record(db, sid, agent, messages, events)
        assert got == expected
    async with sessionmaker() as db:
        stored = await record.messages_page(db, sid, limit=2000)
        kept = await record.list_events(db, sid)
    assert [m.seq for m in stored] == list(range(1200))
    assert stored[7].content == "m7\x00"
    assert [e.key for e in kept] == [f"k{i}" for i in range(1100)]
