"""Migration 20261206_26 folds the words of text stored before it, in either locale.

Rows written under the build before hold words lower-cased by the database's locale (the C
locale: ASCII letters only). The upgrade gives the rows with non-ASCII text their folded
words, rows written after it get them from the trigger, an update of the text refreshes
them, and the downgrade brings the generated columns back.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest
from alembic import command

from tests.support.teststack import recreate_database
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record.store import NewMessage, append_messages, create_session
from vigil.workers.db import alembic_config, make_engine, make_sessionmaker
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

BEFORE = "20261206_25"
FOLDING = "20261206_26"


async def _words(url: str, sql: str, *args: object) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval(f"SELECT tsvector_to_array(tsv) FROM {sql}", *args)
    finally:
        await conn.close()
    return sorted(value)


@pytest.mark.parametrize("locale", [None, "C.utf8"], ids=["server-default", "c-utf8"])
async def test_an_upgrade_folds_the_words_stored_before_it(
    stack: Stack, locale: str | None
) -> None:
    base = stack.settings.endpoints().database_url
    assert base is not None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"vigil_test_fold_{worker}_{(locale or 'default').replace('.', '_').lower()}"
    url = await recreate_database(base, name, collation=locale)
    engine = make_engine(url)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), BEFORE)
        sessionmaker = make_sessionmaker(engine)
        agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
        async with sessionmaker() as db, db.begin():
            await create_session(
                db, session_id=session, agent_id=agent, goal="fold", status="running"
            )
            await append_messages(
                db,
                session,
                agent,
                [
                    NewMessage(0, "user", "Bericht ÜBER das CAFÉ"),
                    NewMessage(1, "user", "ASCII Only"),
                ],
            )
        store = MemoryStore(sessionmaker, HashingEmbedder(384))
        old = await store.add(agent, "Das Büro zieht nach MÜNCHEN", subject="\uff21\uff30\uff29")
        by_seq = "messages WHERE session_id = $1 AND seq = $2"
        assert await _words(url, by_seq, session, 1) == ["ascii"]

        await asyncio.to_thread(command.upgrade, alembic_config(url), FOLDING)
        assert await _words(url, by_seq, session, 0) == ["bericht", "café", "das", "über"]
        assert await _words(url, by_seq, session, 1) == ["ascii"]
        # A backfill stopped part way leaves what came before it committed and the revision
        # unrecorded: the upgrade runs again from the top (it stopped at CREATE FUNCTION).
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE alembic_version SET version_num = $1", BEFORE)
        finally:
            await conn.close()
        await asyncio.to_thread(command.upgrade, alembic_config(url), FOLDING)
        assert await _words(url, by_seq, session, 0) == ["bericht", "café", "das", "über"]
        assert await _words(url, "memories WHERE id = $1", old.id) == [
            "api", "büro", "das", "münchen", "nach", "zieht",
        ]  # fmt: skip

        # Written after: the trigger folds; an update of the text folds its words again.
        new = await store.add(agent, "ÉCOLE Straße", subject="\uff33chule")
        assert await _words(url, "memories WHERE id = $1", new.id) == [
            "schule", "straße", "école",
        ]  # fmt: skip
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE memories SET content = 'ÖL' WHERE id = $1", new.id)
        finally:
            await conn.close()
        assert await _words(url, "memories WHERE id = $1", new.id) == ["schule", "öl"]

        await asyncio.to_thread(command.downgrade, alembic_config(url), BEFORE)
        if locale is None:  # the C locale's own casing again
            assert await _words(url, by_seq, session, 0) == ["bericht", "cafÉ", "das", "Über"]
        await asyncio.to_thread(command.upgrade, alembic_config(url), FOLDING)
        assert await _words(url, by_seq, session, 0) == ["bericht", "café", "das", "über"]
    finally:
        await engine.dispose()
        await recreate_database(base, name, drop_only=True)
