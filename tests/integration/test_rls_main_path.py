"""A session's own path acts under its agent's row-level security.

Rows of another agent are planted (by the owner, as a bug or an operator could) inside a
session: a message, a kept context summary. Run for real, the session never shows them
to the model, and every row its activities write or move is written as ``vigil_agent``.
The client's reads of a session (transcript, events, export, search) hide them too.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, start, stub_settings
from vigil.activities.record.store import NewEvent, NewMessage, append_messages, record_events
from vigil.schema.payloads import SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

PREFIX = "rlspath-"


@pytest.fixture
async def write_probe(sessionmaker: async_sessionmaker[DbSession]) -> AsyncIterator[str]:
    """Triggers noting which role wrote each row of the probed sessions."""
    table = f"probe_{uuid.uuid4().hex[:8]}"
    statements = [
        f"CREATE TABLE {table} (tbl text, op text, usr text, session_id text, agent text)",
        f"GRANT INSERT ON {table} TO vigil_agent",
        f"""CREATE FUNCTION {table}_note() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE sid text := coalesce(to_jsonb(NEW) ->> 'session_id', to_jsonb(NEW) ->> 'id');
            BEGIN
                IF sid LIKE '{PREFIX}%' THEN
                    INSERT INTO {table} VALUES (TG_TABLE_NAME, TG_OP, current_user, sid,
                        to_jsonb(NEW) ->> 'agent_id');
                END IF;
                RETURN NEW;
            END $$""",
        *(
            f"CREATE TRIGGER {table}_{t} AFTER INSERT OR UPDATE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_note()"
            for t in ("sessions", "messages", "events", "artifact_links")
        ),
    ]
    async with sessionmaker() as db, db.begin():
        for statement in statements:
            await db.execute(text(statement))
    yield table
    async with sessionmaker() as db, db.begin():
        for t in ("sessions", "messages", "events", "artifact_links"):
            await db.execute(text(f"DROP TRIGGER {table}_{t} ON {t}"))
        await db.execute(text(f"DROP FUNCTION {table}_note()"))
        await db.execute(text(f"DROP TABLE {table}"))


async def test_a_session_reads_and_writes_only_as_its_agent(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    write_probe: str,
) -> None:
    agent, other = f"{PREFIX}a-{uuid.uuid4().hex[:8]}", f"{PREFIX}b-{uuid.uuid4().hex[:8]}"
    session_id = f"{PREFIX}{uuid.uuid4()}"
    foreign = f"FOREIGN{uuid.uuid4().hex}"
    # The session's row exists already (a retried open finds it so: opened for this
    # workflow, at its start time); the owner plants another agent's rows in it.
    handle = await start(
        client,
        task_queue,
        StartSessionInput(
            agent_id=agent, goal="write the notes", policy=ToolPolicy(require_approval=[])
        ),
        session_id=session_id,
    )  # no worker runs it yet
    started_at = (await handle.describe()).start_time
    async with sessionmaker() as db, db.begin():
        for who in (agent, other):
            await db.execute(
                text("INSERT INTO agents (id, name) VALUES (:a, :n)"), {"a": who, "n": who}
            )
        await db.execute(
            text(
                "INSERT INTO sessions (id, agent_id, goal, status, created_at) "
                "VALUES (:s, :a, 'write the notes', 'running', :at)"
            ),
            {"s": session_id, "a": agent, "at": started_at},
        )
        await append_messages(
            db, session_id, other, [NewMessage(seq=1000, role="user", content=f"{foreign} msg")]
        )
        await record_events(
            db,
            session_id,
            other,
            [
                NewEvent(
                    key="summary:999",
                    kind="context_summary",
                    payload={"upto_seq": -1, "text": f"{foreign} summary"},
                )
            ],
        )

    stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "notes.txt", "content": "the notes"}),
        Reply.tool_call("remember", {"content": "notes are written", "subject": "notes"}),
        Reply.tool_call("finish", {"summary": "notes written"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED

    # The model never saw the other agent's rows.
    assert len(stub.requests) == 3
    for request in stub.requests:
        assert foreign not in str(request.body)

    # Every row the run wrote or moved was written acting for the agent (creating the
    # session is system work; the planted rows are the other agent's).
    async with sessionmaker() as db:
        writes = (
            await db.execute(
                text(
                    f"SELECT tbl, op, usr FROM {write_probe} WHERE session_id = :s "
                    "AND agent = :a AND NOT (tbl = 'sessions' AND op = 'INSERT')"
                ),
                {"s": session_id, "a": agent},
            )
        ).all()
    assert {(tbl, op) for tbl, op, _ in writes} >= {
        ("messages", "INSERT"),
        ("events", "INSERT"),
        ("sessions", "UPDATE"),
        ("artifact_links", "INSERT"),
    }
    assert {usr for _, _, usr in writes} == {"vigil_agent"}, writes

    # The client's reads of the session act for its agent too.
    vigil = await VigilClient.connect(settings.model_copy(update={"task_queue": task_queue}))
    try:
        transcript = await vigil.transcript(session_id, limit=2000)
        assert transcript and all(foreign not in m.content for m in transcript)
        events = await vigil.events(session_id)
        assert events and all(foreign not in str(e.payload) for e in events)
        exported = "".join([chunk async for chunk in vigil.export(session_id)])
        assert "the notes" in exported and foreign not in exported
        hits = (await vigil.search(agent, foreign)).hits
        assert hits == []
    finally:
        await vigil.close()
