"""Writes that meet an erasure of what they write about: a webhook delivery's attempt
recorded while the erasure's transaction ran survived it, and could not be erased. And a
delivery's attempt whose receiver answered words the record cannot hold."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from tests.integration.test_api_triggers import sessions_of
from tests.support.llm_stub import LLMStub, Reply
from tests.support.locks import waiting_for_lock
from tests.support.sessions import running_worker, session_input, start, stub_settings, until
from tests.support.webhook_receiver import Receiver, webhook_receiver
from vigil.activities.agents.runtime import AgentVersions
from vigil.activities.hooks.delivery import Target, WebhookActivities, WebhookTargets
from vigil.activities.record import erasure as queries
from vigil.activities.record import hooks as hook_rows
from vigil.activities.record.store import create_session
from vigil.schema.hooks import NotifyInput
from vigil.workers.client import VigilClient
from vigil.workers.governance import Governance, Subject
from vigil.workers.hooks import TriggerService
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def _attempts(sessionmaker: async_sessionmaker[DbSession], session_id: str) -> int:
    async with sessionmaker() as db:
        found = await db.execute(
            text("SELECT count(*) FROM webhook_deliveries WHERE session_id = :s"),
            {"s": session_id},
        )
        return int(found.scalar_one())


async def _ended_session(
    sessionmaker: async_sessionmaker[DbSession], prefix: str
) -> tuple[str, NotifyInput]:
    """A recorded session that has ended, and the notice of its end to deliver."""
    agent, session = f"{prefix}-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="done")
    return session, NotifyInput(
        delivery_id=f"{session}:ended",
        session_id=session,
        agent_id=agent,
        event="session_ended",
        occurred_at=datetime.now(UTC),
    )


@asynccontextmanager
async def _delivering(
    sessionmaker: async_sessionmaker[DbSession], receiver: Receiver
) -> AsyncIterator[tuple[WebhookActivities, Target]]:
    """The webhook activities, and a webhook posting to ``receiver``."""
    target = Target(key="w1", url=receiver.url, events=["session_ended"], secret_ref="x")
    async with httpx.AsyncClient() as http:
        targets = WebhookTargets(sessionmaker, AgentVersions(sessionmaker))
        yield WebhookActivities(sessionmaker, targets, _secret, http), target


async def test_an_attempt_recorded_while_its_session_is_erased_does_not_outlive_it(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """The delivery checked for a receipt, then wrote its attempt; the erasure deleted
    the attempts, then wrote its receipt, in one transaction. A check made between the two
    saw no receipt yet and found no attempt to wait for: the attempt (the session's id,
    the receiver's URL and error) was kept after the receipt."""
    session, arg = await _ended_session(sessionmaker, "racing")
    with webhook_receiver() as receiver:
        async with _delivering(sessionmaker, receiver) as (acts, target):
            async with sessionmaker() as db, db.begin():
                scope = await queries.session_scope(db, session)
                await queries.purge(db, scope)
                # The delivery's POST comes back while the erasure's transaction runs.
                delivered = asyncio.create_task(
                    ActivityEnvironment().run(acts._deliver, target, b"{}", arg)
                )
                await asyncio.sleep(1.0)
                await queries.write_receipt(
                    db, kind="session", subject=session, by="t", reason=None, counts={}
                )
            assert await delivered is None, "erased while it was posted: nothing kept"
    assert receiver.delivered(), "the POST itself went out before the erasure"
    assert await _attempts(sessionmaker, session) == 0


async def test_an_attempt_left_of_an_erased_session_is_erased_by_the_next_erasure(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """With its session gone, an erasure found nothing to erase, and the attempt stayed
    listed for the session's id."""
    agent, session = f"left-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await hook_rows.record_attempt(
            db,
            delivery_id=f"{session}:ended",
            webhook="w1",
            agent_id=agent,
            session_id=session,
            event="session_ended",
            url="https://hooks.example.com/in",
            attempt=1,
            outcome="failed",
            status_code=503,
            error="down",
        )
    client = await VigilClient.connect(settings)
    try:
        receipt = await Governance(client).erase(Subject("session", session), by="t", reason=None)
    finally:
        await client.close()
    assert receipt.counts["webhook_deliveries"] == 1
    assert await _attempts(sessionmaker, session) == 0


async def _secret(_ref: str) -> str:
    return "whsec-test"


async def test_a_receivers_answer_the_record_cannot_hold_is_kept_readable(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A 400 whose body held a NUL: the attempt's insert was refused, the attempt was not
    listed, and the refusal for good was retried as a failed delivery (for days)."""
    session, arg = await _ended_session(sessionmaker, "nul")
    with webhook_receiver(reply=(400, b"receiver says 400 \x00\xff")) as receiver:
        async with _delivering(sessionmaker, receiver) as (acts, target):
            got = await ActivityEnvironment().run(acts._deliver, target, b"{}", arg)
    assert got is not None and got[0] == "rejected", got
    async with sessionmaker() as db:
        [error] = (
            await db.execute(
                text("SELECT error FROM webhook_deliveries WHERE session_id = :s"), {"s": session}
            )
        ).scalars()
    assert error == "HTTP 400: receiver says 400 \u2400\ufffd", error


async def test_a_trigger_answer_naming_a_session_not_yet_recorded_is_scrubbed(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A trigger started a session that no worker had opened (no row of it yet); erasing
    it by its id deleted its run but kept the trigger's answer naming it, which a sender's
    retry was given (``started``, the erased id) instead of ``erased``."""
    session, trigger = f"s-{uuid.uuid4()}", f"t-{uuid.uuid4().hex[:8]}"
    undefined = settings.model_copy(update={"allow_undefined_agents": True})
    await TriggerService(undefined, sessionmaker).create(
        trigger, agent_id=f"agent-{uuid.uuid4().hex[:8]}", action="start", goal_template="{g}"
    )
    async with sessionmaker() as db, db.begin():
        claimed, _ = await hook_rows.claim_delivery(db, trigger, "d-1", "0" * 64, stale_seconds=60)
        answer = {"outcome": "started", "session_id": session, "action": "start"}
        await hook_rows.finish_delivery(db, claimed.id, 200, answer)
    async with sessionmaker() as db, db.begin():
        scope = await queries.session_scope(db, session)
        assert scope.session_ids == []  # not recorded
        purged = await queries.purge(db, scope)
    assert purged.counts["trigger_answers_scrubbed"] == 1
    async with sessionmaker() as db:
        kept = await db.execute(
            text("SELECT result FROM trigger_deliveries WHERE id = :i"), {"i": claimed.id}
        )
        assert kept.scalar_one() == {"outcome": "erased", "session_id": None, "action": "start"}


async def test_a_session_started_while_its_agent_is_erased_is_refused_at_its_opening(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    database_url: str,
) -> None:
    """A trigger that read its row before an agent's erasure committed started a session
    after the erasure's transaction began; the session's opening waited for the erasure,
    then found a receipt dated before its start (the transaction's start) and opened: the
    erased agent's session ran, and its record outlived the erasure. Refused, its run
    then stayed in Temporal (failed), its goal in its start input and search attributes:
    the run deletes itself."""
    agent = f"erasing-{uuid.uuid4().hex[:8]}"
    stub.enqueue(Reply.text("never asked"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        async with sessionmaker() as db, db.begin():
            await queries.purge(db, await queries.agent_scope(db, agent))
            handle = await start(client, task_queue, session_input("secret goal", agent_id=agent))
            await until(lambda: waiting_for_lock(database_url, f"%{agent}%"), within=30)
            await queries.write_receipt(
                db, kind="agent", subject=agent, by="t", reason=None, counts={}
            )
        await until(lambda: _run_gone(client, handle.id, handle.result_run_id), within=30)
    assert await sessions_of(sessionmaker, agent) == []
    assert stub.requests == []


async def _run_gone(client: Client, workflow_id: str, run_id: str | None) -> bool:
    try:
        await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return True
        raise
    return False
