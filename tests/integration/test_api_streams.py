"""Live streams over HTTP: a real uvicorn server, a real worker on the LLM stub, the real
record. A session streams from start to end in order; a dropped connection resumes with
Last-Event-ID with no gap and no duplicate; an agent's stream carries its sessions; the
model's tokens (both protocols) come before the recorded message and add up to it, also
after a fault mid-stream, which is retried without a second message; many followers
share the one LISTEN connection and a follower that hangs up is freed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from tests.support.api import ApiServer, running_api
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    events,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    until,
)
from tests.support.sse import SseEvent, read_sse
from vigil.activities.artifacts.store import FilesystemStore
from vigil.activities.erasure import Eraser
from vigil.activities.record import store as record
from vigil.activities.record.feed import FeedCursor
from vigil.schema import names
from vigil.schema.payloads import ApproveInput, ToolPolicy
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.liveness import live_pollers
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope, TokenService

pytestmark = pytest.mark.integration

GATED = ToolPolicy(require_approval=["recall"])
"""A session that waits for a human after its first model call: a point to act at."""


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings.model_copy(update={"api_sse_heartbeat_seconds": 0.3})) as server:
        yield server


@pytest.fixture(scope="module")
def reader(api: ApiServer) -> str:
    return api.token(Scope.READ)


@asynccontextmanager
async def http(api: ApiServer, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        yield client


def followers(api: ApiServer) -> int:
    assert api.app is not None
    feed = api.app.state.client._feed  # the API process's one feed
    return 0 if feed is None else int(feed.followers)


def recorded(read_events: list[SseEvent]) -> list[SseEvent]:
    return [e for e in read_events if e.event in ("message", "event", "approval_requested")]


async def begin(
    client: Client, task_queue: str, sessionmaker: async_sessionmaker[DbSession], **fields: object
) -> WorkflowHandle[object, object]:
    agent = fields.pop("agent_id", f"streams-{uuid.uuid4().hex[:8]}")
    handle = await start(client, task_queue, session_input(agent_id=str(agent), **fields))  # type: ignore[arg-type]
    await until(lambda: transcript(sessionmaker, handle.id), what="the session's first message")
    return handle  # type: ignore[return-value]


async def approve(handle: WorkflowHandle[object, object]) -> None:
    await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="tester"))


async def test_a_session_streams_from_start_to_end_in_order(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    stub.enqueue(Reply.tool_call("recall", {"query": "disk"}), Reply.text("all good"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker)
        async with http(api, reader) as h:
            read = await read_sse(h, f"/v1/sessions/{handle.id}/stream")
    messages = await transcript(sessionmaker, handle.id)
    record_events = await events(sessionmaker, handle.id)

    assert read.events[0].event == "status"
    assert read.events[-1].event == "end"
    assert read.events[-1].data["status"] == "completed"
    assert read.events[-1].data["summary"] == "all good"
    streamed = read.of("message")
    assert [(m.data["seq"], m.data["role"], m.data["content"]) for m in streamed] == [
        (m.seq, m.role, m.content) for m in messages
    ]
    assert [e.data["key"] for e in read.of("event", "approval_requested")] == [
        e.key for e in record_events
    ]
    # Every recorded item has an id, and the ids move forward one item at a time.
    cursors = [FeedCursor.parse(e.id) for e in recorded(read.events)]
    steps = [
        (b.message_id - a.message_id > 0) + (b.event_id - a.event_id > 0)
        for a, b in itertools.pairwise(cursors)
    ]
    assert steps == [1] * len(steps)
    assert all(e.id is None for e in read.of("status", "token", "end"))


async def test_a_dropped_connection_resumes_with_no_gap_and_no_duplicate(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    stub.enqueue(Reply.tool_call("recall", {"query": "x"}), Reply.text("done after the gap"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker, policy=GATED)
        path = f"/v1/sessions/{handle.id}/stream"
        async with http(api, reader) as h:
            first = await read_sse(
                h, path, until=lambda evs: any(e.event == "approval_requested" for e in evs)
            )
            # Disconnected: the session goes on and ends while nobody listens.
            await approve(handle)
            await handle.result()
            last_id = recorded(first.events)[-1].id
            second = await read_sse(h, path, last_event_id=last_id)
            whole = await read_sse(h, path)
            middle_id = recorded(whole.events)[2].id
            from_middle = await read_sse(h, path, last_event_id=middle_id)

    def keys(evs: list[SseEvent]) -> list[tuple[str, object]]:
        return [(e.event, e.data.get("seq", e.data.get("key"))) for e in recorded(evs)]

    assert keys(first.events) + keys(second.events) == keys(whole.events)
    assert keys(from_middle.events) == keys(whole.events)[3:]
    messages = await transcript(sessionmaker, handle.id)
    assert [k for k in keys(whole.events) if k[0] == "message"] == [
        ("message", m.seq) for m in messages
    ]
    assert second.events[-1].event == "end"


async def test_a_decision_comes_before_the_result_of_the_call_it_approved(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    """The session writes a decision with its next record, after the tool ran: the stream
    still gives it first, live and from the record, with ids that move forward one item
    at a time, and resuming at any id continues exactly there."""
    stub.enqueue(Reply.tool_call("recall", {"query": "x"}), Reply.text("approved, done"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker, policy=GATED)
        path = f"/v1/sessions/{handle.id}/stream"
        async with http(api, reader) as h:
            reading = asyncio.create_task(read_sse(h, path))
            await approval_pending(handle, sessionmaker)  # type: ignore[arg-type]
            await until(lambda: followers(api) >= 1, what="the stream follows")
            await approve(handle)
            live = await reading
            whole = await read_sse(h, path)  # the session has ended: all from the record
            resumed = [await read_sse(h, path, last_event_id=e.id) for e in recorded(whole.events)]
    written = [e.kind for e in await events(sessionmaker, handle.id)]
    assert "approval_decided" in written

    def keys(evs: list[SseEvent]) -> list[tuple[str, object]]:
        return [(e.event, e.data.get("seq", e.data.get("key"))) for e in recorded(evs)]

    for read in (live, whole):
        items = recorded(read.events)
        decided = next(n for n, e in enumerate(items) if e.data.get("kind") == "approval_decided")
        result = next(n for n, e in enumerate(items) if e.data.get("role") == "tool")
        assert decided < result, keys(read.events)
        assert read.events[-1].event == "end"
    assert keys(live.events) == keys(whole.events)
    cursors = [FeedCursor.parse(e.id) for e in recorded(whole.events)]
    assert len(set(cursors)) == len(cursors)
    assert all(a < b for a, b in itertools.pairwise(cursors))
    for n, again in enumerate(resumed):
        assert keys(again.events) == keys(whole.events)[n + 1 :], n


async def test_a_session_no_worker_picked_up_is_said_to_wait_not_unknown(
    api: ApiServer, reader: str, client: Client
) -> None:
    queue = f"tq-nobody-{uuid.uuid4().hex[:8]}"
    handle = await start(client, queue, session_input(agent_id=f"streams-{uuid.uuid4().hex[:8]}"))
    try:
        async with http(api, reader) as h:
            waiting = await h.get(f"/v1/sessions/{handle.id}/stream")
            unknown = await h.get(f"/v1/sessions/no-such-{uuid.uuid4().hex}/stream")
    finally:
        await handle.terminate("test over")
    assert waiting.status_code == 409, waiting.text
    assert waiting.json()["error"]["code"] == "no_worker"
    assert unknown.status_code == 404, unknown.text


WIDE_ONES = "\uff11.\uff11"
"""A Last-Event-ID of full-width digits: no position, and not ASCII."""


async def test_an_agent_stream_carries_its_sessions(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    agent = f"streams-two-{uuid.uuid4().hex[:8]}"

    def both_ended(evs: list[SseEvent]) -> bool:
        return sum(e.event == "event" and e.data["kind"] == "session_ended" for e in evs) >= 2

    async with (
        running_worker(client, stub_settings(settings, stub.url_openai), task_queue),
        http(api, reader) as h,
    ):
        reading = asyncio.create_task(read_sse(h, f"/v1/agents/{agent}/stream", until=both_ended))
        one = await begin(client, task_queue, sessionmaker, agent_id=agent)
        two = await begin(client, task_queue, sessionmaker, agent_id=agent)
        read = await reading
        other = await h.get(f"/v1/agents/{agent}/stream", headers={"Last-Event-ID": "not-an-id"})
        wide = await h.get(
            f"/v1/agents/{agent}/stream", headers=[(b"Last-Event-ID", WIDE_ONES.encode())]
        )
    assert other.status_code == 422
    # Quoted as sent (UTF-8), not as its bytes read one by one ('ï¼\x91.ï¼\x91').
    assert wide.status_code == 422, wide.text
    assert repr(WIDE_ONES) in wide.json()["error"]["message"], wide.text
    for handle in (one, two):
        messages = await transcript(sessionmaker, handle.id)
        streamed = [m for m in read.of("message") if m.data["session_id"] == handle.id]
        assert [(m.data["seq"], m.data["content"]) for m in streamed] == [
            (m.seq, m.content) for m in messages
        ]
    assert {s.data["session_id"] for s in read.of("status")} <= {one.id, two.id}


async def test_an_agent_stream_ends_when_the_agent_is_erased(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    agent = f"streams-erased-{uuid.uuid4().hex[:8]}"
    async with (
        running_worker(client, stub_settings(settings, stub.url_openai), task_queue),
        http(api, reader) as h,
    ):
        handle = await begin(client, task_queue, sessionmaker, agent_id=agent)
        await handle.result()
        reading = asyncio.create_task(read_sse(h, f"/v1/agents/{agent}/stream", within=30))
        await until(lambda: followers(api) >= 1, what="the stream follows")
        eraser = Eraser(sessionmaker=sessionmaker, store=FilesystemStore(tmp_path), temporal=client)
        await eraser.erase("agent", agent, by="test")
        read = await reading
    assert read.events[-1].event == "end"
    assert read.events[-1].data == {"agent_id": agent, "status": "erased"}
    # A stream opened after the erasure follows the name anew: sessions may start under it.
    async with http(api, reader) as h:
        again = asyncio.create_task(read_sse(h, f"/v1/agents/{agent}/stream", within=30))
        await asyncio.sleep(1.5)
        assert not again.done()
        again.cancel()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_tokens_come_before_the_recorded_message_and_add_up_to_it(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    protocol: str,
) -> None:
    said = "The quick brown fox jumps over the lazy dog, twice: the quick brown fox."
    stub.enqueue(Reply.tool_call("recall", {"query": "fox"}), Reply.text(said, chunk_delay=0.02))
    url = stub.url_openai if protocol == "openai" else stub.url_anthropic
    async with running_worker(client, stub_settings(settings, url, provider=protocol), task_queue):
        handle = await begin(client, task_queue, sessionmaker, policy=GATED)
        async with http(api, reader) as h:
            reading = asyncio.create_task(read_sse(h, f"/v1/sessions/{handle.id}/stream"))
            await approval_pending(handle, sessionmaker)  # type: ignore[arg-type]
            await until(lambda: followers(api) >= 1, what="the stream follows")
            await approve(handle)
            read = await reading
    [reply] = [m for m in read.of("message") if m.data["content"] == said]
    tokens = [t for t in read.of("token") if t.data["seq"] == reply.data["seq"]]
    assert len(tokens) >= 2, read.of("token")
    assert read.events.index(tokens[-1]) < read.events.index(reply)
    assert "".join(t.data["text"] for t in sorted(tokens, key=lambda t: t.data["index"])) == said
    assert {t.data["attempt"] for t in tokens} == {1}
    assert stub.requests[-1].body["stream"] is True


@pytest.mark.parametrize(("protocol", "fault"), [("openai", "drop"), ("anthropic", "error")])
async def test_a_fault_mid_stream_is_retried_without_a_second_message(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    protocol: str,
    fault: str,
) -> None:
    said = "one two three four five six seven eight"
    stub.enqueue(
        Reply.tool_call("recall", {"query": "n"}),
        Reply.broken_stream(said, after=3, fault=fault, chunk_delay=0.01),  # type: ignore[arg-type]
        Reply.text(said, chunk_delay=0.01),
    )
    url = stub.url_openai if protocol == "openai" else stub.url_anthropic
    async with running_worker(client, stub_settings(settings, url, provider=protocol), task_queue):
        handle = await begin(client, task_queue, sessionmaker, policy=GATED)
        async with http(api, reader) as h:
            reading = asyncio.create_task(read_sse(h, f"/v1/sessions/{handle.id}/stream"))
            await approval_pending(handle, sessionmaker)  # type: ignore[arg-type]
            await until(lambda: followers(api) >= 1, what="the stream follows")
            await approve(handle)
            read = await reading
    messages = await transcript(sessionmaker, handle.id)
    assert [m.content for m in messages].count(said) == 1
    [reply] = [m for m in read.of("message") if m.data["content"] == said]
    tokens = [t for t in read.of("token") if t.data["seq"] == reply.data["seq"]]
    by_attempt: dict[int, str] = {}
    for t in sorted(tokens, key=lambda t: (t.data["attempt"], t.data["index"])):
        by_attempt[t.data["attempt"]] = by_attempt.get(t.data["attempt"], "") + t.data["text"]
    assert by_attempt == {1: "one two three", 2: said}


async def test_many_followers_share_one_listen_connection(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    many = 25  # over one token's bound (16): five tokens of five streams each
    tokens = [await asyncio.to_thread(api.token, Scope.READ) for _ in range(5)]
    stub.enqueue(Reply.tool_call("recall", {"query": "n"}), Reply.text("all of you"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        agent = f"streams-many-{uuid.uuid4().hex[:8]}"
        handle = await begin(client, task_queue, sessionmaker, policy=GATED, agent_id=agent)
        async with contextlib.AsyncExitStack() as clients:
            each = [await clients.enter_async_context(http(api, t)) for t in tokens]
            h = each[0]
            path = f"/v1/sessions/{handle.id}/stream"
            readers = [
                asyncio.create_task(read_sse(each[i % len(each)], path)) for i in range(many)
            ]
            await until(lambda: followers(api) >= many, what=f"{many} followers")
            async with sessionmaker() as db:
                listening = (
                    await db.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND query ~* '^\\s*LISTEN'"
                        )
                    )
                ).scalar_one()
            assert listening == 1
            await approval_pending(handle, sessionmaker)  # type: ignore[arg-type]
            await approve(handle)
            reads = await asyncio.gather(*readers)
            await until(lambda: followers(api) == 0, what="ended streams freed")

            # Followers that hang up (an agent's stream never ends) are freed too.
            def first(evs: list[SseEvent]) -> bool:
                return bool(evs)

            await asyncio.gather(
                *(read_sse(h, f"/v1/agents/{agent}/stream", until=first) for _ in range(5))
            )
            await until(lambda: followers(api) == 0, what="hung-up followers freed")
    messages = await transcript(sessionmaker, handle.id)
    for read in reads:
        assert [m.data["seq"] for m in read.of("message")] == [m.seq for m in messages]
        assert read.events[-1].event == "end"


async def test_a_token_sees_only_its_agents_streams(
    api: ApiServer,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker)
        await handle.result()
    narrow = await asyncio.to_thread(api.token, Scope.READ, agents=["someone-else"])
    async with http(api, narrow) as h:
        hidden = await h.get(f"/v1/sessions/{handle.id}/stream")
        refused = await h.get(f"/v1/agents/{session_input().agent_id}/stream")
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "unknown_session"
    assert refused.status_code == 403


async def test_a_lost_listen_connection_comes_back_and_nothing_is_missed(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    stub.enqueue(Reply.tool_call("recall", {"query": "n"}), Reply.text("after the outage"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker, policy=GATED)
        async with http(api, reader) as h:
            reading = asyncio.create_task(read_sse(h, f"/v1/sessions/{handle.id}/stream"))
            await approval_pending(handle, sessionmaker)  # type: ignore[arg-type]
            await until(lambda: followers(api) >= 1, what="the stream follows")
            async with sessionmaker() as db:
                killed = (
                    await db.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND query ~* '^\\s*LISTEN'"
                        )
                    )
                ).scalar_one()
            assert killed == 1
            await approve(handle)
            read = await reading

    async def listening() -> bool:  # the last statement: (UN)LISTEN of a token channel
        async with sessionmaker() as db:
            count = (
                await db.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query ~* '^\\s*(UN)?LISTEN'"
                    )
                )
            ).scalar_one()
        return bool(count == 1)

    await until(listening, what="the feed listens again")
    messages = await transcript(sessionmaker, handle.id)
    assert [m.data["seq"] for m in read.of("message")] == [m.seq for m in messages]
    assert read.events[-1].event == "end"


async def revoke_soon(server: ApiServer, token: str) -> None:
    """Revoke ``token`` a second from now (a stream opened meanwhile is then open)."""
    await asyncio.sleep(1.0)
    url = server.settings.endpoints().database_url
    assert url is not None
    engine = make_engine(url, pool_size=1)
    try:
        await TokenService(make_sessionmaker(engine)).revoke(token.split("_")[1])
    finally:
        await engine.dispose()


async def test_a_revoked_token_loses_the_stream_it_had_open(api: ApiServer) -> None:
    agent = f"streams-{uuid.uuid4().hex[:8]}"
    token = await asyncio.to_thread(api.token, Scope.READ, agents=[agent])
    async with http(api, token) as h:
        assert (await h.get("/v1/me")).status_code == 200

        revoking = asyncio.create_task(revoke_soon(api, token))
        # Nothing happens on the agent's stream but keepalives: the server must end it.
        read = await read_sse(h, f"/v1/agents/{agent}/stream", within=30)
        await revoking
        assert [e.event for e in read.events][-1:] == ["revoked"], read.events
        assert (await h.get(f"/v1/agents/{agent}/stream")).status_code == 401


async def test_a_quiet_streams_revoked_token_ends_it_before_the_next_keepalive(
    settings: Settings,
) -> None:
    """The token is asked again every few seconds even when nothing comes to send (before:
    only when a keepalive went out, so a stream ran on for up to its heartbeat)."""
    slow = settings.model_copy(update={"api_sse_heartbeat_seconds": 60.0})
    with running_api(slow) as server:
        agent = f"streams-{uuid.uuid4().hex[:8]}"
        token = await asyncio.to_thread(server.token, Scope.READ, agents=[agent])
        async with http(server, token) as h:
            revoking = asyncio.create_task(revoke_soon(server, token))
            # Half the heartbeat: ended by the token's recheck, not by a keepalive.
            read = await read_sse(h, f"/v1/agents/{agent}/stream", within=30)
            await revoking
            assert [e.event for e in read.events] == ["revoked"], read.events


@pytest.mark.parametrize("last_event_id", ["9223372036854775808.0", "0.9223372036854775808"])
async def test_a_position_past_the_64_bit_range_is_422_at_once(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    last_event_id: str,
) -> None:
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker)
        await handle.result()
    headers = {"Last-Event-ID": last_event_id}
    async with http(api, reader) as h:
        session = await h.get(f"/v1/sessions/{handle.id}/stream", headers=headers, timeout=10)
        agent = await h.get(
            f"/v1/agents/{session_input().agent_id}/stream", headers=headers, timeout=10
        )
    for r in (session, agent):
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_request"
        assert "not a stream position" in r.json()["error"]["message"]
    # The largest position that fits is still one.
    async with http(api, reader) as h:
        fits = {"Last-Event-ID": "9223372036854775807.9223372036854775807"}
        async with h.stream("GET", f"/v1/sessions/{handle.id}/stream", headers=fits) as r:
            assert r.status_code == 200


async def test_a_stream_opened_right_after_the_start_waits_for_the_record(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    """The record is written by the worker's first step: a stream opened between the start
    and that step waits for it (it answered 404 not_recorded_yet, which a browser's
    EventSource does not retry). Here no worker takes the session until the stream has
    waited a while (one polled the queue just before, so Temporal still lists it)."""
    cfg = stub_settings(settings, stub.url_openai)
    async with running_worker(client, cfg, task_queue):
        await until(lambda: _polled(client, task_queue), what="the worker polls")
    stub.enqueue(Reply.text("done"))
    handle = await start(client, task_queue, session_input(agent_id="streams-early"))
    async with http(api, reader) as h:
        reading = asyncio.create_task(read_sse(h, f"/v1/sessions/{handle.id}/stream"))
        await asyncio.sleep(1.5)
        assert not reading.done()  # waiting for the record, not refused
        async with running_worker(client, cfg, task_queue):
            read = await asyncio.wait_for(reading, 60)
    assert read.events[-1].event == "end" and read.events[-1].data["status"] == "completed"
    seqs = [e.data["seq"] for e in read.events if e.event == "message"]
    assert seqs == [m.seq for m in await transcript(sessionmaker, handle.id)]


async def _polled(client: Client, task_queue: str) -> bool:
    return bool(await live_pollers(client, task_queue))


async def test_a_stream_of_a_session_erased_meanwhile_ends(
    api: ApiServer,
    reader: str,
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    """Its stream went on with keepalives for ever (and `vigil follow` waited for ever):
    nothing told a follower that the session it followed was gone."""
    from vigil.activities.erasure import Eraser
    from vigil.workers.wiring import make_store

    stub.enqueue(Reply.tool_call("recall", {"query": "x"}), Reply.text("never reached"))
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await begin(client, task_queue, sessionmaker, policy=GATED)
        await approval_pending(handle, sessionmaker)
        eraser = Eraser(sessionmaker=sessionmaker, store=make_store(settings), temporal=client)

        async def erase_soon() -> None:
            await asyncio.sleep(1.0)
            await eraser.erase("session", handle.id, by="tester")

        async with http(api, reader) as h:
            erasing = asyncio.create_task(erase_soon())
            read = await read_sse(h, f"/v1/sessions/{handle.id}/stream", within=30)
            await erasing
    assert read.events[-1].event == "end", [e.event for e in read.events][-5:]
    assert read.events[-1].data["status"] == "erased"


async def test_a_token_holds_a_bounded_number_of_streams(settings: Settings) -> None:
    """Each open stream holds its catch-up and its queue in the API (megabytes when a
    client does not read): 400 streams of one read token that never read took the API
    from 0.2 to 2.6 GB, and every other caller waited. One past the token's bound is a
    429, one past the API's a 503; a stream closed gives its place back."""
    bounded = settings.model_copy(update={"api_max_streams_per_token": 2, "api_max_streams": 3})
    with running_api(bounded) as api:
        one = await asyncio.to_thread(api.token, Scope.READ)
        other = await asyncio.to_thread(api.token, Scope.READ)
        agent = f"streams-{uuid.uuid4().hex[:8]}"
        async with http(api, one) as a, http(api, other) as b:
            path = f"/v1/agents/{agent}/stream"
            async with a.stream("GET", path) as first, a.stream("GET", path) as second:
                assert (first.status_code, second.status_code) == (200, 200)
                third = await a.get(path)
                assert third.status_code == 429, third.text
                assert third.json()["error"]["code"] == "too_many_streams"
                async with b.stream("GET", path) as fourth:
                    assert fourth.status_code == 200
                    fifth = await b.get(path)
                    assert fifth.status_code == 503, fifth.text
            # Both closed: their places are free again (the server notices within a beat).
            for _ in range(100):
                async with a.stream("GET", path) as again:
                    if again.status_code == 200:
                        break
                await asyncio.sleep(0.1)
            assert again.status_code == 200


async def test_an_agent_stream_resumed_after_a_late_commit_misses_nothing(
    api: ApiServer, reader: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """Two sessions of one agent write at once: A's message takes its id first and commits
    last. The agent's stream sent B's message (the larger id) while A's was being written,
    with B's id as its position; a client that reconnected from there after A committed
    never got A's message: the resumed stream read after B's id."""
    agent = f"streams-late-{uuid.uuid4().hex[:8]}"
    one, two = f"late-a-{uuid.uuid4()}", f"late-b-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        for sid in (one, two):
            await record.create_session(
                db, session_id=sid, agent_id=agent, goal="g", status="running"
            )
    path = f"/v1/agents/{agent}/stream"

    def said(evs: list[SseEvent]) -> list[str]:
        return [e.data["content"] for e in evs if e.event == "message"]

    async with http(api, reader) as h:
        first = asyncio.create_task(read_sse(h, path, until=lambda evs: bool(said(evs))))
        await until(lambda: followers(api) > 0, what="the stream's follower")
        async with sessionmaker.begin() as late:  # A's write: its id taken, not committed
            await record.append_messages(
                late, one, agent, [record.NewMessage(seq=0, role="user", content="a, late")]
            )
            async with sessionmaker.begin() as db:  # B's write: a larger id, committed
                await record.append_messages(
                    db, two, agent, [record.NewMessage(seq=0, role="user", content="b")]
                )
            # The stream hangs up on its first message; a moment for it to come.
            await asyncio.wait({first}, timeout=1.5)
            if first.done():  # it sent one while A's was being written: hang up there
                gone = first.result()
            else:
                first.cancel()
                gone = None
        read = gone if gone is not None else None
        last_id = None
        if read is not None:
            last_id = [e for e in read.events if e.event == "message"][-1].id
        resumed = await read_sse(
            h,
            path,
            last_event_id=last_id,
            until=lambda evs: len(said(evs)) + len(said(read.events if read else [])) >= 2,
            within=10,
        )
    got = said(read.events if read else []) + said(resumed.events)
    assert sorted(got) == ["a, late", "b"], got
