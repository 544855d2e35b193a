"""Following a session rides out an outage of PostgreSQL: the stream waits and reads again
from where it got to, and ends with the session, whole.

Before, the first read after the outage began raised: `vigil follow` gave up (while it
had said "reconnecting") as the session went on, and the API's event stream ended with
an unhandled error, no `end` or error event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.api import running_api
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
from vigil.workers.tokens import Scope, TokenService

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
    with running_api(settings) as api:
        token = (await TokenService(sessionmaker).create("tester", scope=Scope.READ)).token
        async with running_worker(client, cfg, task_queue):
            handle = await start(client, task_queue, arg)
            await approval_pending(handle, sessionmaker)
            feed = await vigil_client.live_feed()
            seen: list[FeedEntry] = []
            lines: list[str] = []

            async def follow() -> None:
                async for entry in feed.follow(arg.agent_id, session_id=handle.id, tokens=False):
                    seen.append(entry)

            async def stream() -> None:  # the API's event stream, as a client reads it
                async with (
                    httpx.AsyncClient(
                        base_url=api.base_url,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=180,
                    ) as http,
                    http.stream("GET", f"/v1/sessions/{handle.id}/stream") as r,
                ):
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        lines.append(line)

            following = asyncio.create_task(follow())
            streaming = asyncio.create_task(stream())
            await until(lambda: _items(seen), within=30, what="the catch-up")
            await until(lambda: "event: message" in lines, within=30, what="the stream")
            await asyncio.to_thread(postgres.stop)
            # Decided while the record is away: what follows is written once it is back.
            await handle.execute_update(
                names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana")
            )
            await until(lambda: any(isinstance(e, Away) for e in seen), within=60, what="it waits")
            await until(
                lambda: any("record is not answering" in ln for ln in lines),
                within=60,
                what="the stream says it waits",
            )
            assert not following.done() and not streaming.done()  # before: both raised
            await asyncio.sleep(2)  # an outage of some seconds, waited through
            await asyncio.to_thread(postgres.start)
            await asyncio.wait_for(asyncio.gather(following, streaming), 180)

    final = [e for e in seen if isinstance(e, StatusChange)][-1]
    assert (final.status, final.final) == ("completed", True), final
    recorded = await transcript(sessionmaker, handle.id)
    keys = [(e.kind, e.key) for e in _items(seen)]
    assert len(keys) == len(set(keys)), keys  # nothing twice across the outage
    followed = sorted(e.message.seq for e in _items(seen) if e.message is not None)
    assert followed == sorted(m.seq for m in recorded), (followed, recorded)
    # The stream: every recorded message once, each event id once, and its end.
    ids = [ln.removeprefix("id: ") for ln in lines if ln.startswith("id: ")]
    assert len(ids) == len(set(ids)), ids
    pairs = list(itertools.pairwise(lines))
    sent = [
        json.loads(data.removeprefix("data: "))["seq"]
        for event, data in pairs
        if event == "event: message"
    ]
    assert sorted(sent) == sorted(m.seq for m in recorded), (sent, lines)
    (end,) = [json.loads(d.removeprefix("data: ")) for e, d in pairs if e == "event: end"]
    assert end["status"] == "completed", end


def _items(seen: list[FeedEntry]) -> list[FeedItem]:
    return [e for e in seen if isinstance(e, FeedItem)]
