"""`remember` run again for the same call (a worker died after the memory was stored but
before Temporal heard of it) stores nothing more and answers as the first run did.

Temporal re-runs an activity whose worker died from the start, with the same input. The
tests run the real activity (and the real `remember` tool, as ``run_tool`` calls it) twice
with the same key against the real database: the second run must find the first one's
write by its key, which the database keeps unique.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.testing import ActivityEnvironment

from vigil.activities.record import store as record
from vigil.activities.record.rls import record_maintenance
from vigil.activities.session import SessionActivities
from vigil.activities.tools import registry as tools
from vigil.schema.payloads import RememberInput, SessionStatus
from vigil.workers.settings import Settings
from vigil.workers.worker import runtime

pytestmark = pytest.mark.integration


@pytest.fixture
async def acts(settings: Settings) -> AsyncIterator[SessionActivities]:
    async with runtime(settings) as rt:
        yield rt.activities


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[DbSession]) -> tuple[str, str]:
    agent, session_id = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=session_id, agent_id=agent, goal="g", status="running"
        )
    return agent, session_id


async def _memories(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> list[tuple[int, int]]:
    """(id, merges) of the agent's memories."""
    async with sessionmaker() as db:
        rows = await db.execute(
            text(
                "SELECT id, coalesce((metadata->>'merge_count')::int, 0) AS merges "
                "FROM memories WHERE agent_id = :a ORDER BY id"
            ),
            {"a": agent},
        )
        return [(row.id, row.merges) for row in rows]


async def test_the_outcome_activity_run_twice_stores_one_memory(
    acts: SessionActivities,
    session: tuple[str, str],
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent, session_id = session
    outcome = RememberInput(
        session_id=session_id,
        agent_id=agent,
        goal="check the tide table",
        status=SessionStatus.COMPLETED,
        summary="high tide at 06:10",
        steps=3,
    )
    env = ActivityEnvironment()
    first = await env.run(acts.remember, outcome)
    again = await env.run(acts.remember, outcome)

    assert first.action == "inserted" and first.memory_id is not None
    assert again == first
    assert await _memories(sessionmaker, agent) == [(first.memory_id, 0)]


async def test_the_remember_tool_run_twice_for_one_call_stores_one_memory(
    acts: SessionActivities,
    session: tuple[str, str],
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent, session_id = session
    ctx = tools.BuiltinContext(
        session_id=session_id,
        agent_id=agent,
        step=4,
        call_index=1,
        settings=acts.settings,
        store=acts.store,
        sessionmaker=acts.sessionmaker,
        http=acts.http,
        memory=acts.memory,
    )
    args = {"content": "The staging cluster runs PostgreSQL 16", "subject": "staging db"}
    first = await tools.remember(ctx, args)
    again = await tools.remember(ctx, args)
    assert first.data is not None
    kept = first.data["id"]
    assert first.text == f"memory {kept} added"
    assert (again.text, again.data) == (first.text, first.data)
    assert await _memories(sessionmaker, agent) == [(kept, 0)]

    # Another call of the same session remembering the same thing is a new write: merged.
    other = tools.BuiltinContext(**{**ctx.__dict__, "call_index": 2})
    merged = await tools.remember(other, args)
    assert merged.text == f"merged into memory {kept} (a near-duplicate)"
    assert (await tools.remember(other, args)).text == merged.text
    [(_, merges)] = await _memories(sessionmaker, agent)
    assert merges == 1

    # Something else about the same subject supersedes it. The answer named the new
    # memory as the superseded one ("memory superseded (id <new>)").
    third = tools.BuiltinContext(**{**ctx.__dict__, "call_index": 3})
    newer = await tools.remember(
        third, {"content": "The staging cluster moved to PostgreSQL 17", "subject": "staging db"}
    )
    assert newer.data is not None and newer.data["id"] != kept
    assert newer.text == f"memory {newer.data['id']} added, superseding {kept} (the same subject)"


async def test_the_outcome_of_a_session_erased_meanwhile_is_not_remembered(
    acts: SessionActivities,
    session: tuple[str, str],
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """The session's record was erased while its end ran (an agent erased while its
    schedule starts runs): `remember` failed on the record's foreign key, three times, and
    left a traceback in the worker's log. Its outcome is not remembered, and no error is
    raised: the session is gone, and so is what it would have remembered."""
    agent, session_id = session
    async with sessionmaker.begin() as db:
        await record_maintenance(db)  # as the erasure deletes it
        await db.execute(text("DELETE FROM sessions WHERE id = :id"), {"id": session_id})
    outcome = RememberInput(
        session_id=session_id,
        agent_id=agent,
        goal="check the tide table",
        status=SessionStatus.COMPLETED,
        summary="high tide at 06:10",
        steps=3,
    )
    done = await ActivityEnvironment().run(acts.remember, outcome)
    assert done.memory_id is None and done.action == "skipped", done
    assert await _memories(sessionmaker, agent) == []
