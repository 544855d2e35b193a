"""What a new session costs PostgreSQL before its first model call (issue #12): pinning its
agent version and opening its record stay within a fixed number of round trips, and
opening stays idempotent and refuses an id another agent holds. Counted, never timed.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.integration.test_step_round_trips import IDLE_BEFORE_PING
from tests.support.round_trips import counting
from tests.support.zero_model import ZeroModel
from vigil.activities.agents.runtime import AgentActivities, AgentVersions
from vigil.activities.hooks.delivery import WebhookTargets
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import erasure as erasure_rows
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.schema.agents import AgentSpec, ResolveAgentInput
from vigil.schema.payloads import OpenSessionInput
from vigil.workers.agents import AgentService
from vigil.workers.client import VigilClient
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.governance import Governance, Subject
from vigil.workers.hooks import WebhookService
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_store

pytestmark = pytest.mark.integration

ROUND_TRIPS_TO_RESOLVE = 2
"""A warm worker pins a new session's agent version in two statements, neither inside a
transaction: the newest version, on a connection already acting for the agent, and the
agent's webhooks. Before: two transactions through SQLAlchemy's sessions, seven round
trips."""

ROUND_TRIPS_TO_OPEN = 5
"""Opening a session's record, one transaction: BEGIN; the agent's row, the session's row
(with its agent version) and the check that an existing row is this agent's, one
statement; the switch to the agent; the goal's message with its event; COMMIT. Before:
eight (the agent, the session, the switch there and back and the version were a
statement each)."""


@pytest.fixture
async def worker_sessionmaker(database_url: str) -> Any:
    # As the worker makes its engine; pings only after a minute idle (see the step test).
    engine = make_engine(database_url, ping_after_idle=IDLE_BEFORE_PING)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def test_pinning_a_new_sessions_agent_stays_within_its_round_trips(
    worker_sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sm = worker_sessionmaker
    name = f"pin-{uuid.uuid4().hex[:8]}"
    await AgentService(sm).apply_spec(
        AgentSpec.model_validate(
            {"name": name, "system_prompt": "be brief: {goal}", "tools": [{"name": "finish"}]}
        )
    )
    await WebhookService(sm).add(name, "http://127.0.0.1:9/hook", ["session_ended"], "env:X")
    versions = AgentVersions(sm)
    acts = AgentActivities(versions, WebhookTargets(sm, versions).events)
    env = ActivityEnvironment()
    arg = ResolveAgentInput(session_id=f"s-{uuid.uuid4()}", agent_id=name, goal="go")
    await env.run(acts.resolve_agent, arg)  # warm: the connection acts for the agent
    await AgentService(sm).apply_spec(
        AgentSpec.model_validate(
            {"name": name, "system_prompt": "be very brief: {goal}", "tools": [{"name": "finish"}]}
        )
    )
    with counting() as counted:
        runtime = await env.run(acts.resolve_agent, arg)
    # The newest version, read fresh (not a kept one), with the webhook's event.
    assert runtime.version == 2 and runtime.system_prompt == "be very brief: go"
    assert runtime.webhook_events == ["session_ended"]
    assert counted.round_trips <= ROUND_TRIPS_TO_RESOLVE, counted.round_trips
    assert counted.transactions == 0, counted.transactions


async def test_a_kept_newest_version_is_answered_without_its_definition(
    worker_sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Versions never change: a worker that holds the newest already gets it back as it
    is (the statement leaves the definition out), and a newer one in full."""
    sm = worker_sessionmaker
    name = f"kept-{uuid.uuid4().hex[:8]}"

    def spec(prompt: str) -> AgentSpec:
        return AgentSpec.model_validate(
            {"name": name, "system_prompt": prompt, "tools": [{"name": "finish"}]}
        )

    await AgentService(sm).apply_spec(spec("first: {goal}"))
    async with sm() as db:
        first = await agent_rows.newest_version(db, name)
        assert first is not None and first.version == 1
        assert await agent_rows.newest_version(db, name, first) is first
    await AgentService(sm).apply_spec(spec("second: {goal}"))
    async with sm() as db:
        second = await agent_rows.newest_version(db, name, first)
    assert second is not None and second is not first and second.version == 2
    assert second.spec["system_prompt"] == "second: {goal}"
    assert [t["name"] for t in second.tools] == ["finish"]

    # The worker's reader passes what it holds: the same runtime either way.
    versions = AgentVersions(sm)
    acts = AgentActivities(versions)
    arg = ResolveAgentInput(session_id=f"s-{uuid.uuid4()}", agent_id=name, goal="go")
    env = ActivityEnvironment()
    cold = await env.run(acts.resolve_agent, arg)
    warm = await env.run(acts.resolve_agent, arg)
    assert warm == cold and warm.system_prompt == "second: go"
    assert [t.name for t in warm.tools] == ["finish"]


def _session_acts(settings: Settings, sm: async_sessionmaker[DbSession], http: Any) -> Any:
    return SessionActivities(
        settings=settings,
        sessionmaker=sm,
        store=make_store(settings),
        provider=ZeroModel(),
        http=http,
        memory=MemoryStore(sm, HashingEmbedder(384)),
    )


async def test_opening_a_session_stays_within_its_round_trips_and_is_idempotent(
    settings: Settings, worker_sessionmaker: async_sessionmaker[DbSession]
) -> None:
    sm = worker_sessionmaker
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    env = ActivityEnvironment()
    async with httpx.AsyncClient() as http:
        acts = _session_acts(settings, sm, http)
        warm = OpenSessionInput(session_id=f"s-{uuid.uuid4()}", agent_id=agent, goal="warm")
        await env.run(acts.open_session, warm)
        arg = OpenSessionInput(
            session_id=sid,
            agent_id=agent,
            goal="count the boats",
            system_prompt="be brief",
            agent_version=3,
        )
        with counting() as counted:
            opened = await env.run(acts.open_session, arg)
        assert opened.created
        assert counted.round_trips <= ROUND_TRIPS_TO_OPEN, counted.round_trips
        assert counted.transactions == 1, counted.transactions

        again = await env.run(acts.open_session, arg)  # a retry after a lost completion
        assert not again.created and again.next_seq == opened.next_seq

    async with sm() as db:
        row = await record.get_session(db, sid)
        messages = await record.messages_page(db, sid)
        events = await record.list_events(db, sid)
        version = await agent_rows.session_agent_version(db, sid)
    assert row is not None and row.agent_id == agent and row.goal == "count the boats"
    assert row.metadata == {"system_prompt": "be brief"}
    assert version == 3
    assert [(m.seq, m.role, m.content) for m in messages] == [(0, "user", "count the boats")]
    assert [e.kind for e in events] == ["session_opened"]


async def test_opening_a_session_whose_id_another_agent_holds_is_refused(
    settings: Settings, worker_sessionmaker: async_sessionmaker[DbSession]
) -> None:
    sm = worker_sessionmaker
    sid = f"s-{uuid.uuid4()}"
    owner, other = f"agent-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    env = ActivityEnvironment()
    async with httpx.AsyncClient() as http:
        acts = _session_acts(settings, sm, http)
        await env.run(
            acts.open_session, OpenSessionInput(session_id=sid, agent_id=owner, goal="mine")
        )
        with pytest.raises(ApplicationError) as refused:
            await env.run(
                acts.open_session,
                OpenSessionInput(session_id=sid, agent_id=other, goal="theirs", agent_version=1),
            )
    assert refused.value.type == "InvalidInput" and refused.value.non_retryable
    assert "taken by another agent" in refused.value.message
    async with sm() as db:
        row = await record.get_session(db, sid)
        messages = await record.messages_page(db, sid)
        version = await agent_rows.session_agent_version(db, sid)
    # Nothing of the other agent's reached the row or the transcript.
    assert row is not None and row.agent_id == owner and row.goal == "mine"
    assert [m.content for m in messages] == ["mine"]
    assert version is None


async def test_an_opening_that_lands_after_its_sessions_erasure_is_refused(
    settings: Settings, worker_sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A session's opening rides with its first model call: a session erased while
    that call ran (just started with the wrong words, and erased at once) was opened
    again when the call wrote its records, goal and all, after the receipt. So were an
    erased agent's sessions (and its agent row). A session that takes the id after the
    erasure (a key's next one) is opened."""
    sm = worker_sessionmaker
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    env = ActivityEnvironment()
    async with httpx.AsyncClient() as http:
        acts = _session_acts(settings, sm, http)
        before = datetime.now(UTC) - timedelta(seconds=5)
        opening = OpenSessionInput(
            session_id=sid, agent_id=agent, goal="the wrong words", started_at=before
        )
        await env.run(acts.open_session, opening)
        other = OpenSessionInput(
            session_id=f"s-{uuid.uuid4()}", agent_id=agent, goal="more words", started_at=before
        )
        client = await VigilClient.connect(settings)
        try:
            governance = Governance(client)
            await governance.erase(Subject("session", sid), by="t", reason=None)
            with pytest.raises(ApplicationError, match="was erased") as refused:
                await env.run(acts.open_session, opening)  # the call's late records
            assert refused.value.non_retryable
            await governance.erase(Subject("agent", agent), by="t", reason=None)
            with pytest.raises(ApplicationError, match="was erased"):
                await env.run(acts.open_session, other)
        finally:
            await client.close()
        async with sm() as db:
            assert await record.get_session(db, sid) is None
            assert await record.get_session(db, other.session_id) is None
            assert await record.session_agent(db, sid) is None
        # The id again, for a session started after the erasures: opened.
        again = opening.model_copy(update={"started_at": datetime.now(UTC), "goal": "anew"})
        assert (await env.run(acts.open_session, again)).created
    async with sm() as db:
        row = await record.get_session(db, sid)
    assert row is not None and row.goal == "anew"


@pytest.mark.parametrize("kind", ["session", "agent"])
async def test_an_opening_that_meets_its_erasure_midway_waits_and_is_refused(
    settings: Settings, worker_sessionmaker: async_sessionmaker[DbSession], kind: str
) -> None:
    """The check for a receipt ran in the opening's one statement: an opening that came
    while the erasure's transaction ran (its purge done, its receipt not yet committed)
    saw no receipt, and the session (and, for an agent's erasure, the agent's row) was
    written again after the erasure."""
    sm = worker_sessionmaker
    agent = f"agent-{uuid.uuid4()}"
    recorded, opening_id = f"s-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    env = ActivityEnvironment()
    before = datetime.now(UTC) - timedelta(seconds=5)
    async with httpx.AsyncClient() as http:
        acts = _session_acts(settings, sm, http)
        await env.run(
            acts.open_session,
            OpenSessionInput(session_id=recorded, agent_id=agent, goal="g", started_at=before),
        )
        late = OpenSessionInput(
            session_id=opening_id, agent_id=agent, goal="the wrong words", started_at=before
        )
        subject = opening_id if kind == "session" else agent
        async with sm() as db, db.begin():
            if kind == "session":  # not recorded yet: its opening rides with a call
                scope = await erasure_rows.session_scope(db, opening_id)
            else:
                scope = await erasure_rows.agent_scope(db, agent)
            await erasure_rows.purge(db, scope)
            opening = asyncio.create_task(env.run(acts.open_session, late))
            await asyncio.sleep(1.0)  # the call's records come while the erasure runs
            await erasure_rows.write_receipt(
                db, kind=kind, subject=subject, by="t", reason=None, counts={}
            )
        with pytest.raises(ApplicationError, match="was erased"):
            await opening
    async with sm() as db:
        assert await record.get_session(db, opening_id) is None
        if kind == "agent":
            held = await db.execute(text("SELECT count(*) FROM agents WHERE id = :a"), {"a": agent})
            assert held.scalar_one() == 0


async def test_a_session_erasure_takes_the_row_its_opening_wrote_after_the_plan(
    settings: Settings, worker_sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A session erased just after it started: the erasure's plan read no row (its opening
    had not committed), then the opening (already on a worker) wrote the row, its goal and
    its events, finding no receipt yet; the purge deleted the sessions the plan had read,
    none, so the row, the goal's words and its memory stayed, `running`, beside a receipt
    saying the session was erased."""
    sm = worker_sessionmaker
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    env = ActivityEnvironment()
    async with httpx.AsyncClient() as http:
        acts = _session_acts(settings, sm, http)
        async with sm() as db:
            scope = await erasure_rows.session_scope(db, sid)  # the plan: nothing recorded
        assert scope.session_ids == [] and scope.agent_id is None
        opening = OpenSessionInput(
            session_id=sid, agent_id=agent, goal="the words to erase", started_at=datetime.now(UTC)
        )
        assert (await env.run(acts.open_session, opening)).created
        memories = MemoryStore(sm, HashingEmbedder(settings.embedding_dim))
        await memories.add(agent, "a note the session made", source_session_id=sid)
        async with sm() as db, db.begin():
            purged = await erasure_rows.purge(db, scope)
            await erasure_rows.write_receipt(
                db, kind="session", subject=sid, by="t", reason=None, counts=purged.counts
            )
    assert purged.counts["sessions"] == 1, purged.counts
    async with sm() as db:
        assert await record.get_session(db, sid) is None
        left = await db.execute(
            text(
                "SELECT (SELECT count(*) FROM messages WHERE session_id = :s) "
                "+ (SELECT count(*) FROM events WHERE session_id = :s) "
                "+ (SELECT count(*) FROM memories WHERE source_session_id = :s)"
            ),
            {"s": sid},
        )
        assert left.scalar_one() == 0
