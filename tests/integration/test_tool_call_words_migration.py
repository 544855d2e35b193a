"""Migration 20261207_27 gives the messages stored before it the words of their tool calls.

Before it a message's words came from its text alone. The upgrade refreshes the rows that
carry tool calls (and only those), rows written after it get the calls' words from the
trigger, and the downgrade takes them away again.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import asyncpg
import pytest
from alembic import command

from tests.support.teststack import recreate_database
from vigil.activities.record.store import NewMessage, append_messages, create_session
from vigil.workers.db import alembic_config, make_engine, make_sessionmaker
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

BEFORE = "20261206_26"
CALL_WORDS = "20261207_27"


async def _words(url: str, session: str, seq: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval(
            "SELECT tsvector_to_array(tsv) FROM messages WHERE session_id = $1 AND seq = $2",
            session,
            seq,
        )
    finally:
        await conn.close()
    return sorted(value)


async def test_an_upgrade_gives_stored_tool_calls_their_words(stack: Stack) -> None:
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"vigil_test_call_words_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = await recreate_database(base, name)
    engine = make_engine(url)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), BEFORE)
        sessionmaker = make_sessionmaker(engine)
        agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
        calls = [{"id": "c1", "name": "recall", "arguments": json.dumps({"query": "owls"})}]

        async def write(seq: int) -> None:
            async with sessionmaker() as db, db.begin():
                await append_messages(
                    db, session, agent, [NewMessage(seq, "assistant", "Looking", tool_calls=calls)]
                )

        async with sessionmaker() as db, db.begin():
            await create_session(
                db, session_id=session, agent_id=agent, goal="words", status="running"
            )
            await append_messages(db, session, agent, [NewMessage(0, "user", "Plain text")])
        await write(1)
        assert await _words(url, session, 1) == ["look"]

        await asyncio.to_thread(command.upgrade, alembic_config(url), CALL_WORDS)
        assert await _words(url, session, 1) == ["look", "owl", "recal"]
        assert await _words(url, session, 0) == ["plain", "text"]
        await write(2)  # written after: the trigger
        assert await _words(url, session, 2) == ["look", "owl", "recal"]

        await asyncio.to_thread(command.downgrade, alembic_config(url), BEFORE)
        assert await _words(url, session, 1) == ["look"]
        assert await _words(url, session, 2) == ["look"]
        # A backfill stopped part way: the trigger and the first rows done, the revision not
        # recorded. The upgrade runs again from the top, as it is.
        await asyncio.to_thread(command.upgrade, alembic_config(url), CALL_WORDS)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT set_config('vigil.record_maintenance', 'on', false)")
            await conn.execute(
                "UPDATE messages SET tsv = to_tsvector('english', content) "
                "WHERE session_id = $1 AND seq = 2",
                session,
            )
            await conn.execute("UPDATE alembic_version SET version_num = $1", BEFORE)
        finally:
            await conn.close()
        assert await _words(url, session, 2) == ["look"]
        await asyncio.to_thread(command.upgrade, alembic_config(url), CALL_WORDS)
        assert await _words(url, session, 1) == ["look", "owl", "recal"]
        assert await _words(url, session, 2) == ["look", "owl", "recal"]
    finally:
        await engine.dispose()
        await recreate_database(base, name, drop_only=True)
