"""Row-level security: acting for agent A, no query reads or writes agent B's rows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.rls import acting_for
from vigil.activities.record.store import (
    NewEvent,
    NewMessage,
    append_messages,
    create_session,
    record_events,
)
from vigil.workers.db import migrate_sync
from vigil.workers.settings import asyncpg_dsn

pytestmark = pytest.mark.integration

TABLES = ("sessions", "messages", "events", "artifact_links", "memories")


@dataclass(frozen=True)
class Tenant:
    agent: str
    session: str
    sha: str


async def _seed(sessionmaker: async_sessionmaker[DbSession], tag: str) -> Tenant:
    """One agent with a session, 3 messages, 2 events, an artifact link and a memory."""
    tenant = Tenant(f"agent-{tag}-{uuid.uuid4()}", f"s-{uuid.uuid4()}", uuid.uuid4().hex * 2)
    async with sessionmaker() as db, db.begin():
        await create_session(
            db,
            session_id=tenant.session,
            agent_id=tenant.agent,
            goal=f"goal {tag}",
            status="running",
        )
        await append_messages(
            db,
            tenant.session,
            tenant.agent,
            [NewMessage(seq=i, role="user", content=f"secret {tag} {i}") for i in range(3)],
        )
        await record_events(
            db,
            tenant.session,
            tenant.agent,
            [NewEvent(key=f"k{i}", kind="model_call", payload={"i": i}) for i in range(2)],
        )
        await db.execute(
            text("INSERT INTO artifacts (sha256, size, storage_uri) VALUES (:s, 1, 'file:///x')"),
            {"s": tenant.sha},
        )
        await db.execute(
            text("INSERT INTO artifact_holders (sha256, agent_id) VALUES (:h, :a)"),
            {"a": tenant.agent, "h": tenant.sha},
        )
        await db.execute(
            text(
                "INSERT INTO artifact_links (agent_id, session_id, name, sha256) "
                "VALUES (:a, :s, 'report.md', :h)"
            ),
            {"a": tenant.agent, "s": tenant.session, "h": tenant.sha},
        )
        await db.execute(
            text(
                "INSERT INTO memories (agent_id, kind, content, dim, embedding) "
                "VALUES (:a, 'fact', :c, 3, '[1,0,0]')"
            ),
            {"a": tenant.agent, "c": f"memory of {tag}"},
        )
    return tenant


@pytest.fixture
async def tenants(
    sessionmaker: async_sessionmaker[DbSession],
) -> AsyncIterator[tuple[Tenant, Tenant]]:
    yield await _seed(sessionmaker, "a"), await _seed(sessionmaker, "b")


async def _owner_count(sessionmaker: async_sessionmaker[DbSession], table: str, agent: str) -> int:
    column = "id" if table == "agents" else "agent_id"
    async with sessionmaker() as db:
        return int(
            (
                await db.execute(
                    text(f"SELECT count(*) FROM {table} WHERE {column} = :a"), {"a": agent}
                )
            ).scalar_one()
        )


async def test_select_star_sees_only_own_rows(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    async with acting_for(sessionmaker, a.agent) as db:
        for table in TABLES:
            rows = (await db.execute(text(f"SELECT * FROM {table}"))).mappings().all()
            assert rows, table
            assert {r["agent_id"] for r in rows} == {a.agent}, table
        agents = (await db.execute(text("SELECT id FROM agents"))).scalars().all()
        assert agents == [a.agent]
        shas = (await db.execute(text("SELECT sha256 FROM artifacts"))).scalars().all()
        assert shas == [a.sha]
        # Asking for B's rows by their keys finds nothing either.
        for table in ("messages", "events", "artifact_links"):
            found = await db.execute(
                text(f"SELECT count(*) FROM {table} WHERE session_id = :s"), {"s": b.session}
            )
            assert found.scalar_one() == 0
        assert (
            await db.execute(text("SELECT count(*) FROM artifacts WHERE sha256 = :h"), {"h": b.sha})
        ).scalar_one() == 0


async def test_counts_over_joins_see_only_own_rows(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    async with acting_for(sessionmaker, a.agent) as db:
        joined = await db.execute(
            text(
                "SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id "
                "JOIN agents g ON g.id = s.agent_id"
            )
        )
        assert joined.scalar_one() == 3
        cross = await db.execute(
            text(
                "SELECT count(*) FROM messages m CROSS JOIN events e "
                "LEFT JOIN artifact_links l ON l.session_id = e.session_id "
                "LEFT JOIN artifacts x ON x.sha256 = l.sha256"
            )
        )
        assert cross.scalar_one() == 3 * 2
        per_agent = await db.execute(
            text("SELECT agent_id, count(*) FROM memories GROUP BY agent_id")
        )
        assert per_agent.all() == [(a.agent, 1)]


async def test_update_without_where_touches_only_own_rows(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    snapshot = "SELECT to_jsonb(x) FROM {table} x WHERE {column} = :b ORDER BY to_jsonb(x)::text"

    async def b_rows() -> dict[str, list[Any]]:
        async with sessionmaker() as db:
            return {
                table: list(
                    (
                        await db.execute(
                            text(snapshot.format(table=table, column=column)), {"b": b.agent}
                        )
                    ).scalars()
                )
                for table, column in (
                    ("messages", "agent_id"),
                    ("sessions", "agent_id"),
                    ("artifact_links", "agent_id"),
                    ("memories", "agent_id"),
                )
            }

    before = await b_rows()
    async with acting_for(sessionmaker, a.agent) as db:
        updated = {}
        # Only columns an agent's work may change: the transcript itself never changes.
        for table, change in (
            ("sessions", "goal = 'overwritten'"),
            ("artifact_links", "created_at = now()"),
            ("memories", "importance = 0.9"),
        ):
            result = await db.execute(text(f"UPDATE {table} SET {change}"))
            updated[table] = result.rowcount  # type: ignore[attr-defined]
    assert updated == {"sessions": 1, "artifact_links": 1, "memories": 1}
    assert await b_rows() == before


def _refused(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in {"42501"}  # insufficient_privilege / RLS check


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO messages (session_id, agent_id, seq, role, content) "
        "VALUES (:b_session, :b_agent, 99, 'user', 'forged')",
        "INSERT INTO messages (session_id, agent_id, seq, role, content) "
        "VALUES (:b_session, :a_agent, 99, 'user', 'slipped into B''s session')",
        "INSERT INTO messages (session_id, agent_id, seq, role, content) "
        "VALUES (:b_session, :a_agent, 0, 'user', 'x') ON CONFLICT (session_id, seq) DO NOTHING",
        "INSERT INTO events (session_id, agent_id, key, kind) "
        "VALUES (:b_session, :b_agent, 'forged', 'x')",
        "INSERT INTO sessions (id, agent_id, goal, status) "
        "VALUES ('forged-' || :a_agent, :b_agent, 'g', 'running')",
        "INSERT INTO agents (id, name) VALUES ('forged-' || :a_agent, 'x')",
        "INSERT INTO artifact_links (agent_id, session_id, name, sha256) "
        "VALUES (:a_agent, :b_session, 'steal', :b_sha)",
        "INSERT INTO memories (agent_id, kind, content, dim, embedding) "
        "VALUES (:b_agent, 'fact', 'forged', 3, '[0,1,0]')",
        "UPDATE messages SET agent_id = :b_agent",
        "UPDATE sessions SET agent_id = :b_agent",
        "UPDATE artifact_links SET session_id = :b_session",
        "DELETE FROM messages",
        "DELETE FROM sessions WHERE agent_id = :b_agent",
        "DELETE FROM artifacts",
        "TRUNCATE messages",
    ],
)
async def test_writes_into_another_agent_are_refused(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant], statement: str
) -> None:
    a, b = tenants
    params = {"a_agent": a.agent, "b_agent": b.agent, "b_session": b.session, "b_sha": b.sha}
    used = {k: v for k, v in params.items() if f":{k}" in statement}
    with pytest.raises(DBAPIError) as caught:
        async with acting_for(sessionmaker, a.agent) as db:
            await db.execute(text(statement), used)
    assert _refused(caught.value), caught.value
    for table in TABLES:
        assert await _owner_count(sessionmaker, table, b.agent) == (
            {"messages": 3, "events": 2}.get(table, 1)
        ), table


async def test_without_an_agent_nothing_is_visible(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    async with sessionmaker() as db, db.begin():
        await db.execute(text("SET LOCAL ROLE vigil_agent"))
        for table in (*TABLES, "agents", "artifacts"):
            assert (await db.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0
    with pytest.raises(ValueError):
        async with acting_for(sessionmaker, ""):
            pass


async def test_role_does_not_leak_past_the_block(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    async with sessionmaker() as db:
        async with acting_for(db, a.agent):  # begins and commits its own transaction
            assert (await db.execute(text("SELECT current_user"))).scalar_one() == "vigil_agent"
        assert (await db.execute(text("SELECT current_user"))).scalar_one() != "vigil_agent"
        await db.rollback()
        # Inside the caller's transaction: switched for the block, switched back after.
        async with db.begin():
            async with acting_for(db, a.agent):
                seen = await db.execute(
                    text("SELECT count(*) FROM messages WHERE agent_id = :b"), {"b": b.agent}
                )
                assert seen.scalar_one() == 0
            back = await db.execute(
                text("SELECT count(*) FROM messages WHERE agent_id = :b"), {"b": b.agent}
            )
            assert back.scalar_one() == 3
            assert (await db.execute(text("SELECT current_user"))).scalar_one() != "vigil_agent"


async def test_record_queries_work_acting_for_the_agent(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    # Creating a session is system work; its record is written acting for the agent.
    async with sessionmaker() as db, db.begin():
        assert await create_session(
            db, session_id=session, agent_id=agent, goal="g", status="running"
        )
    async with acting_for(sessionmaker, agent) as db:
        assert (
            await append_messages(
                db, session, agent, [NewMessage(seq=0, role="user", content="hi")]
            )
            == 1
        )
        # A retry of the same append is a no-op under RLS too.
        assert (
            await append_messages(
                db, session, agent, [NewMessage(seq=0, role="user", content="hi")]
            )
            == 0
        )
    assert await _owner_count(sessionmaker, "messages", agent) == 1


async def test_migration_grants_the_role_to_a_non_superuser_owner(
    database_url: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A user's own server: the migrating user owns the tables but is not a superuser."""
    suffix = uuid.uuid4().hex[:10]
    owner, password, dbname = f"owner_{suffix}", uuid.uuid4().hex, f"vigil_owned_{suffix}"
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE PASSWORD '{password}'")
        await admin.execute(f'CREATE DATABASE "{dbname}" OWNER {owner}')
        # pgvector is not a trusted extension: an administrator installs it once.
        ext = await asyncpg.connect(asyncpg_dsn(database_url.rsplit("/", 1)[0] + "/" + dbname))
        try:
            await ext.execute("CREATE EXTENSION IF NOT EXISTS vector")
        finally:
            await ext.close()
        # As when the owner itself created the role: ADMIN on it, but not SET (PG 16).
        await admin.execute(
            f"GRANT vigil_agent TO {owner} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE"
        )
        host = database_url.split("@", 1)[1].rsplit("/", 1)[0]
        owned_url = f"postgresql://{owner}:{password}@{host}/{dbname}"
        conn = await asyncpg.connect(owned_url)
        try:
            can_set = await conn.fetchval("SELECT pg_has_role(current_user, 'vigil_agent', 'SET')")
            assert can_set is False
        finally:
            await conn.close()

        await asyncio.to_thread(migrate_sync, owned_url)

        conn = await asyncpg.connect(owned_url)
        try:
            superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            assert await conn.fetchval(superuser) is False
            assert await conn.fetchval("SELECT pg_has_role(current_user, 'vigil_agent', 'SET')")
            async with conn.transaction():
                for agent in ("a", "b"):
                    await conn.execute(
                        "INSERT INTO agents (id, name) VALUES ($1, $2)", agent, agent
                    )
                    await conn.execute(
                        "INSERT INTO sessions (id, agent_id, goal, status) "
                        "VALUES ($1, $2, 'g', 'running')",
                        agent,
                        agent,
                    )
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE vigil_agent")
                await conn.execute("SELECT set_config('vigil.agent_id', 'a', true)")
                assert await conn.fetch("SELECT id FROM sessions") == [("a",)]
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(
                        "INSERT INTO sessions (id, agent_id, goal, status) "
                        "VALUES ('x', 'b', 'g', 'running')"
                    )
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.execute(f"DROP OWNED BY {owner} CASCADE")
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()
