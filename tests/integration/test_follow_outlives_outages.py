"""Following a session rides out an outage of PostgreSQL: the stream waits and reads again
from where it got to, and ends with the session, whole.

Before, the first read after the outage began raised: `vigil follow` gave up (while it
had said "reconnecting") as the session went on, and the API's event stream ended with
an unhandled error, no `end` or error event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.outage import PartOutage
from tests.support.sessions import (
    approval_pending,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import ApproveInput, ToolPolicy
from vigil.workers.client import VigilClient
from vigil.workers.feed import Away, FeedEntry, FeedItem, StatusChange
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

# Stops a part of the shared test stack: runs alone, after the parallel phase.
pytestmark = [pytest.mark.integration, pytest.mark.disruptive]


@pytest.fixture
def postgres(stack: Stack) -> Iterator[PartOutage]:
    with PartOutage(stack, "postgres").restoring() as outage:
        yield outage


async def test_a_followed_session_is_followed_through_a_database_outage(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    postgres: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
    vigil_client: VigilClient,
) -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "fetched after the outage"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    arg = session_input("fetch the page").model_copy(
        update={"policy": ToolPolicy(require_approval=["http_fetch"])}
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker)
        feed = await vigil_client.live_feed()
        seen: list[FeedEntry] = []

        async def follow() -> None:
            async for entry in feed.follow(arg.agent_id, session_id=handle.id, tokens=False):
                seen.append(entry)

        following = asyncio.create_task(follow())
        await until(lambda: _items(seen), within=30, what="the catch-up")
        await asyncio.to_thread(postgres.stop)
        await until(
            lambda: any(isinstance(e, Away) for e in seen), within=60, what="the stream waits"
        )
        assert not following.done()  # it waits: before, it raised here
        await asyncio.to_thread(postgres.start)
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana"))
        await asyncio.wait_for(following, 120)  # ends with the session

    final = [e for e in seen if isinstance(e, StatusChange)][-1]
    assert (final.status, final.final) == ("completed", True), final
    away = [e for e in seen if isinstance(e, Away)]
    assert away and all("PostgreSQL" in e.why or "connect" in e.why.lower() for e in away), away
    keys = [(e.kind, e.key) for e in _items(seen)]
    assert len(keys) == len(set(keys)), keys  # nothing twice across the outage
    recorded = await transcript(sessionmaker, handle.id)
    followed = sorted(e.message.seq for e in _items(seen) if e.message is not None)
    assert followed == sorted(m.seq for m in recorded), (followed, recorded)


def _items(seen: list[FeedEntry]) -> list[FeedItem]:
    return [e for e in seen if isinstance(e, FeedItem)]
