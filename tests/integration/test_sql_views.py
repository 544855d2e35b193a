"""SQL a person can read: every table and column carries a comment, and the views answer
the usual questions in one query after a real session with an approval; they keep to
row-level security, and rows written under an event kind's old name read as the new one."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import wait_approval, wait_recorded
from tests.support.llm_stub import Reply
from vigil.activities.record import store
from vigil.activities.record.rls import acting_for
from vigil.schema import event_kinds
from vigil.workers.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration

VIEWS = ("sessions_view", "tool_calls_view", "model_calls_view", "human_actions_view")

# The README's example, as a user pastes it (agent and window as parameters).
NEEDED_APPROVAL = """
    SELECT session_id, tool, arguments, decision, decided_by, decision_note, called_at
      FROM tool_calls_view
     WHERE agent_id = $1 AND needed_approval AND approval_requested_at > now() - interval '1 hour'
     ORDER BY approval_requested_at
"""


def _run(database_url: str, work: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_every_table_and_column_has_a_comment(database_url: str) -> None:
    async def work(conn: asyncpg.Connection) -> Any:
        return await conn.fetch(
            """
            SELECT c.relname, c.relkind::text AS relkind, a.attname,
                   obj_description(c.oid, 'pg_class') AS about,
                   col_description(c.oid, a.attnum) AS col_about
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'v', 'p')
            """
        )

    rows = _run(database_url, work)
    relations = {r["relname"] for r in rows}
    assert set(VIEWS) <= relations and {"sessions", "events", "messages"} <= relations
    assert not sorted({r["relname"] for r in rows if not r["about"]}), "tables without comment"
    missing = sorted(f"{r['relname']}.{r['attname']}" for r in rows if not r["col_about"])
    assert missing == [], "columns without comment"


def test_views_answer_after_a_session_with_an_approval(cli: CLIStack) -> None:
    agent = f"views-{uuid.uuid4().hex[:8]}"
    asked, edited = f"{cli.stub.url}/asked", f"{cli.stub.url}/edited"
    goal = cli.plan(
        Reply.tool_call("http_fetch", {"url": asked}),
        Reply.tool_call("finish", {"summary": "fetched the edited page"}),
    )
    sid = cli.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")["id"]
    wait_approval(cli.database_url, sid, "a1-0")
    cli.vigil.ok(
        "approve", sid, "a1-0", "--by", "ana", "--note", "use the mirror",
        "--edit", json.dumps({"url": edited}),
    )  # fmt: skip
    wait_recorded(cli.database_url, sid, "completed")

    async def as_owner(conn: asyncpg.Connection) -> Any:
        calls = await conn.fetch(NEEDED_APPROVAL, agent)
        session = await conn.fetchrow("SELECT * FROM sessions_view WHERE session_id = $1", sid)
        models = await conn.fetch(
            "SELECT * FROM model_calls_view WHERE session_id = $1 ORDER BY step", sid
        )
        # A row written under an old kind name (a worker on older code) reads as the new one.
        await conn.execute(
            "INSERT INTO events (session_id, agent_id, key, kind, step, actor, reason) "
            "VALUES ($1, $2, 'legacy:pause', 'pause', 2, 'bob', 'old worker')",
            sid,
            agent,
        )
        humans = await conn.fetch(
            "SELECT kind, actor, reason FROM human_actions_view WHERE session_id = $1 ORDER BY at",
            sid,
        )
        # Every old name maps to its name now, the upload's too (migration 20261205_23).
        mapped = {
            old: await conn.fetchval("SELECT vigil_event_kind($1)", old)
            for old in event_kinds.LEGACY
        }
        assert mapped == event_kinds.LEGACY, mapped
        return calls, session, models, humans

    calls, session, models, humans = _run(cli.database_url, as_owner)
    [call] = calls
    assert call["session_id"] == sid and call["tool"] == "http_fetch"
    assert json.loads(call["arguments"]) == {"url": edited}, "the arguments that ran"
    assert (call["decision"], call["decided_by"], call["decision_note"]) == (
        "approve",
        "ana",
        "use the mirror",
    )
    assert call["called_at"] is not None

    assert session["agent_id"] == agent and session["status"] == "completed"
    assert session["steps"] == 2 and session["tool_calls"] == 1 and session["approvals"] == 1
    assert session["tokens"] == session["tokens_in"] + session["tokens_out"] > 0
    assert session["ended_at"] is not None
    assert session["duration"] == session["ended_at"] - session["started_at"]
    assert session["agent_version"] is None  # an undefined agent: no definition
    assert [m["step"] for m in models] == [1, 2]
    assert all(m["tokens_in"] > 0 for m in models)

    assert ("approval_decided", "ana", "use the mirror") in [tuple(h) for h in humans]
    assert ("session_paused", "bob", "old worker") in [tuple(h) for h in humans]
    assert not [h for h in humans if h["kind"] in event_kinds.LEGACY]

    edited_call = _tool_call_row(cli.database_url, sid)
    assert edited_call["arguments_edited"] is True and edited_call["ok"] is True
    assert edited_call["edited_arguments"] == {"url": edited}

    _rls_and_old_names(cli.database_url, sid, agent)


def _tool_call_row(database_url: str, sid: str) -> Any:
    async def work(conn: asyncpg.Connection) -> Any:
        return await conn.fetchrow(
            "SELECT arguments_edited, ok, edited_arguments::text AS edited_arguments "
            "FROM tool_calls_view WHERE session_id = $1",
            sid,
        )

    row = _run(database_url, work)
    return {**row, "edited_arguments": json.loads(row["edited_arguments"])}


def _rls_and_old_names(database_url: str, sid: str, agent: str) -> None:
    async def go() -> None:
        engine = make_engine(database_url)
        db = make_sessionmaker(engine)
        try:
            for view in VIEWS:
                async with acting_for(db, agent) as mine:
                    own = (await mine.execute(_count(view), {"sid": sid})).scalar_one()
                async with acting_for(db, f"other-{uuid.uuid4().hex[:6]}") as other:
                    seen = (await other.execute(_count(view), {"sid": sid})).scalar_one()
                assert own > 0 and seen == 0, (view, own, seen)
            async with acting_for(db, agent) as mine:
                paused = await store.list_events(mine, sid, kind=event_kinds.SESSION_PAUSED)
            assert [(e.kind, e.actor) for e in paused] == [(event_kinds.SESSION_PAUSED, "bob")]
        finally:
            await engine.dispose()

    asyncio.run(go())


def _count(view: str) -> Any:
    from sqlalchemy import text

    return text(f"SELECT count(*) FROM {view} WHERE session_id = :sid")
