"""Holes in row-level security, each tried as the agent role (``vigil_agent``).

* An agent must not reach another agent's artifact by naming its sha256 in a link.
* Unique keys and foreign keys must not tell an agent whether another agent's rows exist:
  a probe with another agent's key and a probe with a key nobody uses fail alike.
* The transcript is append-only in the database: messages and events are never updated
  or deleted by an agent, and a session row changes only in the columns its run moves.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.rls import acting_for, record_maintenance
from vigil.activities.record.store import NewEvent, NewMessage, append_messages, record_events

pytestmark = pytest.mark.integration

REFUSED = "42501"  # insufficient_privilege: a grant, a policy or vigil's own check


def _unused_id() -> int:
    """A bigint no row holds (a probe that succeeds before the fix may insert it)."""
    return 9 * 10**15 + uuid.uuid4().int % 10**15


@dataclass(frozen=True)
class Tenant:
    agent: str
    session: str
    sha: str
    memory_id: int
    message_id: int
    event_id: int
    link_id: int


async def _seed(sessionmaker: async_sessionmaker[DbSession], tag: str) -> Tenant:
    """As the owner (system work): an agent's session, messages, an event, an artifact it
    wrote (held and linked) and a memory."""
    agent, session, sha = f"hole-{tag}-{uuid.uuid4()}", f"s-{uuid.uuid4()}", uuid.uuid4().hex * 2
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text("INSERT INTO agents (id, name) VALUES (:a, :n)"), {"a": agent, "n": tag}
        )
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status) VALUES (:s, :a, 'g', 'running')"
            ),
            {"s": session, "a": agent},
        )
        await append_messages(
            db,
            session,
            agent,
            [NewMessage(seq=i, role="user", content=f"{tag} {i}") for i in (0, 1)],
        )
        await record_events(db, session, agent, [NewEvent(key="k", kind="x")])
        await db.execute(
            text("INSERT INTO artifacts (sha256, size, storage_uri) VALUES (:h, 1, 'file:///x')"),
            {"h": sha},
        )
        await db.execute(
            text("INSERT INTO artifact_holders (sha256, agent_id) VALUES (:h, :a)"),
            {"h": sha, "a": agent},
        )
        ids = (
            await db.execute(
                text(
                    "WITH l AS (INSERT INTO artifact_links (agent_id, session_id, name, sha256) "
                    "VALUES (:a, :s, 'mine.txt', :h) RETURNING id), "
                    "m AS (INSERT INTO memories (agent_id, kind, content, dim, embedding) "
                    "VALUES (:a, 'fact', 'a fact', 3, '[1,0,0]') RETURNING id) "
                    "SELECT (SELECT id FROM l), (SELECT id FROM m), "
                    "(SELECT min(id) FROM messages WHERE session_id = :s), "
                    "(SELECT min(id) FROM events WHERE session_id = :s)"
                ),
                {"a": agent, "s": session, "h": sha},
            )
        ).one()
    return Tenant(agent, session, sha, ids[1], ids[2], ids[3], ids[0])


@pytest.fixture
async def tenants(
    sessionmaker: async_sessionmaker[DbSession],
) -> AsyncIterator[tuple[Tenant, Tenant]]:
    yield await _seed(sessionmaker, "a"), await _seed(sessionmaker, "b")


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "orig", None), "sqlstate", None) or type(exc).__name__)


async def _try(
    sessionmaker: async_sessionmaker[DbSession], agent: str, statement: str, /, **params: object
) -> str:
    """Run one statement acting for ``agent``: "ok" (rows affected), "none" or the SQLSTATE."""
    try:
        async with acting_for(sessionmaker, agent) as db:
            result = await db.execute(text(statement), params)
            return "ok" if result.rowcount else "none"  # type: ignore[attr-defined]
    except DBAPIError as exc:
        return _sqlstate(exc)


async def _count_as(
    sessionmaker: async_sessionmaker[DbSession], agent: str, statement: str, /, **params: object
) -> int:
    async with acting_for(sessionmaker, agent) as db:
        return int((await db.execute(text(statement), params)).scalar_one())


# --- artifacts -------------------------------------------------------------------------


async def test_an_agent_cannot_link_another_agents_artifact_by_its_sha256(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    linked = await _try(
        sessionmaker,
        a.agent,
        "INSERT INTO artifact_links (agent_id, session_id, name, sha256) "
        "VALUES (:agent, :session, 'stolen.txt', :sha)",
        agent=a.agent,
        session=a.session,
        sha=b.sha,
    )
    moved = await _try(
        sessionmaker,
        a.agent,
        "UPDATE artifact_links SET sha256 = :sha WHERE session_id = :session",
        sha=b.sha,
        session=a.session,
    )
    assert (linked, moved) == (REFUSED, REFUSED)
    # Whatever was tried, B's artifact row stays out of A's sight; A's own is visible.
    seen = "SELECT count(*) FROM artifacts WHERE sha256 = :sha"
    assert await _count_as(sessionmaker, a.agent, seen, sha=b.sha) == 0
    assert await _count_as(sessionmaker, a.agent, seen, sha=a.sha) == 1
    # Registering bytes is the system's work, never an agent's.
    forged = await _try(
        sessionmaker,
        a.agent,
        "INSERT INTO artifacts (sha256, size, storage_uri) VALUES (:sha, 1, 'file:///y')",
        sha=uuid.uuid4().hex * 2,
    )
    held = await _try(
        sessionmaker,
        a.agent,
        "INSERT INTO artifact_holders (sha256, agent_id) VALUES (:sha, :agent)",
        sha=b.sha,
        agent=a.agent,
    )
    assert (forged, held) == (REFUSED, REFUSED)


# --- existence oracles -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "theirs"),
    [
        (
            "INSERT INTO sessions (id, agent_id, goal, status) "
            "VALUES (:key, :a_agent, 'g', 'running')",
            "session",
        ),
        ("INSERT INTO agents (id, name) VALUES (:key, 'x')", "agent"),
        (
            "INSERT INTO memories (id, agent_id, kind, content, dim, embedding) "
            "VALUES (:key, :a_agent, 'fact', 'x', 3, '[0,1,0]')",
            "memory_id",
        ),
        (
            "INSERT INTO messages (id, session_id, agent_id, seq, role) "
            "VALUES (:key, :a_session, :a_agent, 77, 'user')",
            "message_id",
        ),
        (
            "INSERT INTO events (id, session_id, agent_id, key, kind) "
            "VALUES (:key, :a_session, :a_agent, 'probe', 'x')",
            "event_id",
        ),
        (
            "INSERT INTO artifact_links (id, agent_id, session_id, name, sha256) "
            "VALUES (:key, :a_agent, :a_session, 'probe', :a_sha)",
            "link_id",
        ),
        (
            "UPDATE memories SET superseded_by = :key WHERE agent_id = :a_agent",
            "memory_id",
        ),
        (
            "INSERT INTO memories (agent_id, kind, content, dim, embedding, superseded_by) "
            "VALUES (:a_agent, 'fact', 'x', 3, '[0,1,0]', :key)",
            "memory_id",
        ),
    ],
    ids=[
        "session-id",
        "agent-id",
        "memory-id",
        "message-id",
        "event-id",
        "link-id",
        "superseded_by-update",
        "superseded_by-insert",
    ],
)
async def test_keys_do_not_reveal_whether_another_agents_rows_exist(
    sessionmaker: async_sessionmaker[DbSession],
    tenants: tuple[Tenant, Tenant],
    statement: str,
    theirs: str,
) -> None:
    a, b = tenants
    common = {"a_agent": a.agent, "a_session": a.session, "a_sha": a.sha}
    used = {k: v for k, v in common.items() if f":{k}" in statement}
    # The key of B's row, and a key of the same kind that nobody holds.
    existing: str | int = getattr(b, theirs)
    unused = _unused_id() if isinstance(existing, int) else f"nobody-{uuid.uuid4()}"
    probe_existing = await _try(sessionmaker, a.agent, statement, key=existing, **used)
    probe_unused = await _try(sessionmaker, a.agent, statement, key=unused, **used)
    assert probe_existing == probe_unused == REFUSED, (probe_existing, probe_unused)


# --- append-only -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE messages SET content = 'rewritten' WHERE session_id = :a_session",
        "UPDATE messages SET created_at = now() - interval '1 day' WHERE session_id = :a_session",
        "UPDATE events SET payload = '{}' WHERE session_id = :a_session",
        "DELETE FROM messages WHERE session_id = :a_session",
        "DELETE FROM events WHERE session_id = :a_session",
        "INSERT INTO messages (session_id, agent_id, seq, role, content) "
        "VALUES (:a_session, :a_agent, 0, 'user', 'x') "
        "ON CONFLICT (session_id, seq) DO UPDATE SET content = 'rewritten'",
        "UPDATE sessions SET agent_id = :a_agent, id = id || '-x' WHERE id = :a_session",
        "UPDATE sessions SET created_at = now() WHERE id = :a_session",
        "UPDATE sessions SET metadata = '{}' WHERE id = :a_session",
        "UPDATE sessions SET archive_uri = 'file:///elsewhere' WHERE id = :a_session",
        "UPDATE sessions SET schedule_id = 'other' WHERE id = :a_session",
        "UPDATE memories SET content = 'rewritten' WHERE agent_id = :a_agent",
        "UPDATE agents SET name = 'renamed' WHERE id = :a_agent",
    ],
)
async def test_an_agent_cannot_rewrite_its_record(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant], statement: str
) -> None:
    a, _ = tenants
    params = {"a_agent": a.agent, "a_session": a.session}
    used = {k: v for k, v in params.items() if f":{k}" in statement}
    assert await _try(sessionmaker, a.agent, statement, **used) == REFUSED


async def test_a_session_row_moves_only_in_the_columns_a_run_changes(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    moved = await _try(
        sessionmaker,
        a.agent,
        "UPDATE sessions SET status = 'completed', step = 3, summary = 's', goal = 'g2', "
        "run_count = 2, tokens_in = 1, tokens_out = 2, cost_usd = 0.5, updated_at = now(), "
        "finished_at = now() WHERE id = :s",
        s=a.session,
    )
    assert moved == "ok"


async def test_the_owner_too_needs_record_maintenance_to_change_the_transcript(
    sessionmaker: async_sessionmaker[DbSession], tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with pytest.raises(DBAPIError) as caught:
        async with sessionmaker() as db, db.begin():
            await db.execute(
                text("UPDATE messages SET content = 'x' WHERE session_id = :s"), {"s": a.session}
            )
    assert _sqlstate(caught.value) == REFUSED
    async with sessionmaker() as db, db.begin():
        await record_maintenance(db)
        done = await db.execute(
            text("UPDATE messages SET step = step WHERE session_id = :s"), {"s": a.session}
        )
        assert done.rowcount == 2  # type: ignore[attr-defined]
