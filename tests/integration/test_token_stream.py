"""The model's streamed tokens: a closing publisher sends what is left at once.

Deltas are batched for ``FLUSH_SECONDS`` before they are notified. The reply is whole when
the publisher closes, yet it used to wait for the batching interval to run out before
sending the last batch, and the model call (and with it the session's step) waited too.
Here the interval is far longer than the test allows the close: a close that waits for it
fails the test, one that sends at once passes.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from tests.support.round_trips import counting
from vigil.activities import token_stream
from vigil.activities.record.feed import TOKEN_CHUNK_CHARS, token_channel
from vigil.activities.token_stream import TokenPublisher
from vigil.workers.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration


async def test_closing_sends_the_pending_tokens_without_waiting_out_the_batch(
    database_url: str,
    sessionmaker: async_sessionmaker[DbSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(token_stream, "FLUSH_SECONDS", 600.0)
    agent, sid = f"tokens-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(
            token_channel(agent), lambda *args: heard.put_nowait(str(args[-1]))
        )
        publisher = TokenPublisher(sessionmaker, session_id=sid, agent_id=agent, seq=3, attempt=1)
        await publisher("hello ")
        await publisher("world")
        assert heard.empty()  # batched: nothing sent while the interval runs
        # Not wait_for: the old close swallowed the cancellation and sent after it.
        closing = asyncio.ensure_future(publisher.aclose())
        await asyncio.wait([closing], timeout=20)
        closed_in_time = closing.done()
        if not closed_in_time:
            closing.cancel()
        assert closed_in_time, "the close waited for the batching interval"
        payload = json.loads(await asyncio.wait_for(heard.get(), timeout=20))
    finally:
        await listener.close()
    assert (payload["s"], payload["q"], payload["t"], payload["d"]) == (sid, 3, 1, "hello world")
    assert heard.empty()  # sent once


async def test_a_long_batch_is_sent_in_order_in_one_round_trip(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch longer than one notification holds goes out as several, in one statement
    # that is its own transaction: one round trip, as the connection's own role.
    monkeypatch.setattr(token_stream, "FLUSH_SECONDS", 600.0)
    agent, sid = f"tokens-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    text = "".join(f"word{i} " for i in range(3 * TOKEN_CHUNK_CHARS // 5))
    heard: asyncio.Queue[str] = asyncio.Queue()
    # Pinging only connections idle a minute: the round trips counted are the flush's.
    engine = make_engine(database_url, ping_after_idle=60)
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(
            token_channel(agent), lambda *args: heard.put_nowait(str(args[-1]))
        )
        publisher = TokenPublisher(
            make_sessionmaker(engine), session_id=sid, agent_id=agent, seq=1, attempt=1
        )
        await publisher(text)
        await publisher.aclose()  # a first close: the pool's connection is made
        await publisher(text)
        with counting() as counted:
            await publisher.aclose()
        payloads = [json.loads(await asyncio.wait_for(heard.get(), timeout=20))]
        while len("".join(p["d"] for p in payloads)) < 2 * len(text):
            payloads.append(json.loads(await asyncio.wait_for(heard.get(), timeout=20)))
    finally:
        await listener.close()
        await engine.dispose()
    assert len(payloads) >= 6
    assert [p["n"] for p in payloads] == list(range(len(payloads)))
    assert "".join(p["d"] for p in payloads) == text + text
    assert (counted.round_trips, counted.transactions) == (1, 0)
