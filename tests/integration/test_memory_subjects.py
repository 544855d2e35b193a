"""A memory's subject is one subject however its text is spelled in Unicode: a composed
and a decomposed "é", full-width letters and ligatures (NFKC), as well as case and the
whitespace around it. Subjects kept before writers normalised them are brought into the
same form by a migration."""

from __future__ import annotations

import asyncio
import os
import unicodedata
import uuid

import asyncpg
import pytest
from alembic import command
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.teststack import recreate_database
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.memory.values import UnstorableText
from vigil.workers.db import alembic_config
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

COMPOSED = unicodedata.normalize("NFC", "Café Zoë")
DECOMPOSED = unicodedata.normalize("NFD", "Café Zoë")
WIDE_CAF = "\uff23\uff21\uff26"  # "CAF" in full-width letters
WIDE_OLD = "\uff4f\uff4c\uff44"  # "old" in full-width letters
FI = "\ufb01"  # the "fi" ligature


async def test_spellings_of_one_subject_supersede_one_another(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    assert COMPOSED != DECOMPOSED
    store = MemoryStore(sessionmaker, HashingEmbedder(384))
    agent = f"agent-{uuid.uuid4()}"
    first = await store.add(agent, "The café opens at eight", subject=COMPOSED)
    second = await store.add(agent, "The café opens at nine now", subject=f" {DECOMPOSED}")
    assert second.action == "superseded" and second.superseded_ids == (first.id,)
    # Full-width letters and a ligature read as the plain ones.
    third = await store.add(agent, "The café opens at ten", subject=f"{WIDE_CAF}É ZOË")
    assert third.action == "superseded" and third.superseded_ids == (second.id,)
    kept = await store.get(agent, third.id)
    assert kept is not None and kept.subject == "CAFÉ ZOË"
    chain = await store.history(agent, DECOMPOSED.upper())
    assert [m.id for m in chain] == [first.id, second.id, third.id]
    office = await store.add(agent, "The office is on floor 3", subject=f"of{FI}ce")
    again = await store.add(agent, "Our team sits in building B since May", subject="Office")
    assert again.action == "superseded" and again.superseded_ids == (office.id,)


async def test_the_upgrade_brings_subjects_kept_before_into_the_same_form(stack: Stack) -> None:
    base = stack.settings.endpoints().database_url
    assert base is not None
    name = f"vigil_test_subjects_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    url = await recreate_database(base, name)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "20261206_24")
        conn = await asyncpg.connect(url)
        try:
            for subject in (DECOMPOSED, WIDE_OLD, None, "plain", "CAFÉ", "Straße"):
                await conn.execute(
                    "INSERT INTO memories (agent_id, kind, subject, content, dim, embedding, "
                    "embedder, embedder_version) VALUES ('a', 'fact', $1, 'x', 3, '[1,0,0]', "
                    "'hashing', '1')",
                    subject,
                )
            await asyncio.to_thread(command.upgrade, alembic_config(url), "20261206_25")
            # A worker of the build before inserts without the key while the upgrade
            # rolls out: the row gets the key that build matches by.
            await conn.execute(
                "INSERT INTO memories (agent_id, kind, subject, content, dim, embedding, "
                "embedder, embedder_version) VALUES ('a', 'fact', 'Older Build', 'x', 3, "
                "'[1,0,0]', 'hashing', '1')"
            )
            rows = await conn.fetch("SELECT subject, subject_key FROM memories ORDER BY id")
        finally:
            await conn.close()
        assert [(r["subject"], r["subject_key"]) for r in rows] == [
            (COMPOSED, "café zoë"),
            ("old", "old"),
            (None, None),
            ("plain", "plain"),
            ("CAFÉ", "café"),  # lower() under the C locale kept "cafÉ"
            ("Straße", "strasse"),
            ("Older Build", "older build"),
        ]
    finally:
        await recreate_database(base, name, drop_only=True)


async def test_a_subject_that_nfkc_spells_past_the_limit_is_refused_saying_so(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    store = MemoryStore(sessionmaker, HashingEmbedder(384))
    with pytest.raises(UnstorableText) as refused:
        await store.add(f"agent-{uuid.uuid4()}", "x", subject="\ufdfa" * 60)
    assert str(refused.value) == (
        "subject exceeds the limit of 1000 characters (1080 once normalised to NFKC, 60 as given)"
    )


async def test_a_subject_too_long_in_bytes_for_its_index_is_refused_saying_so(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """700 characters of four bytes each are within the 1,000 characters but not within
    what the subject's index can hold: the write was a database error (a 500 over HTTP)."""
    store = MemoryStore(sessionmaker, HashingEmbedder(384))
    with pytest.raises(UnstorableText) as refused:
        await store.add(f"agent-{uuid.uuid4()}", "x", subject="\U00020000" * 700)
    assert str(refused.value).startswith(
        "subject of 2800 bytes in UTF-8 exceeds the limit of 2000 bytes"
    )
