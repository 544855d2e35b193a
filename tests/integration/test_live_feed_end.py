"""A session's live stream ends only after every row the session recorded was sent, and
carries only the entries of the agent it was opened for.

The feed reads a session's status as it stands when the notification is resolved, so a
final status can reach a follower before the notifications of rows committed with it or
just before it. The stream must still carry those rows before it ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import erasure
from vigil.activities.record import store as record
from vigil.activities.record.feed import FeedItem
from vigil.activities.record.store import NewMessage
from vigil.workers.feed import Feed, FeedEntry, Idle, StatusChange


async def _drain(stream: AsyncIterator[FeedEntry]) -> list[FeedEntry]:
    return [entry async for entry in stream]


async def test_a_final_status_notified_before_the_last_messages_still_sends_them(
    database_url: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent, session_id = f"feed-end-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=session_id, agent_id=agent, goal="g", status="running"
        )
        await record.append_messages(
            db, session_id, agent, [NewMessage(seq=0, role="user", content="go")]
        )
    feed = await Feed(database_url, sessionmaker).start()
    try:
        stream = feed.follow(agent, session_id=session_id, idle=0.05)
        first = [await anext(stream), await anext(stream)]
        assert isinstance(first[0], StatusChange) and not first[0].final
        assert isinstance(first[1], FeedItem) and first[1].data["seq"] == 0
        assert isinstance(await anext(stream), Idle)  # caught up: following live now
        # The session ends in one transaction whose status notification comes first.
        async with sessionmaker.begin() as db:
            await record.update_session(db, session_id, status="completed", finished=True)
            await record.append_messages(
                db,
                session_id,
                agent,
                [
                    NewMessage(seq=1, role="assistant", content="one"),
                    NewMessage(seq=2, role="assistant", content="two"),
                ],
            )
        rest = await asyncio.wait_for(_drain(stream), 30)
    finally:
        await feed.close()
    rest = [e for e in rest if not isinstance(e, Idle)]
    seqs = [e.data["seq"] for e in rest if isinstance(e, FeedItem) and e.kind == "message"]
    assert seqs == [1, 2]
    assert isinstance(rest[-1], StatusChange) and rest[-1].final


async def test_a_session_id_taken_by_another_agent_after_an_erasure_reaches_only_its_own(
    database_url: str, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A stream opened on a session under its agent's token carries that agent's entries
    only: when the session is erased and its id is at once taken by another agent's
    session, the stream ends as erased and never carries the other agent's words."""
    first, second = f"feed-a-{uuid.uuid4().hex[:8]}", f"feed-b-{uuid.uuid4().hex[:8]}"
    session_id = f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=session_id, agent_id=first, goal="g", status="running"
        )
    feed = await Feed(database_url, sessionmaker).start()
    try:
        # Without idle: the stream asks whether its session is still recorded only
        # when it was quiet for a few seconds, so the other agent's entries come first.
        stream = feed.follow(first, session_id=session_id)
        opened = await anext(stream)
        assert isinstance(opened, StatusChange) and opened.session_id == session_id
        async with sessionmaker.begin() as db:
            await erasure.purge(db, await erasure.session_scope(db, session_id))
            await record.create_session(
                db, session_id=session_id, agent_id=second, goal="g", status="running"
            )
        theirs = feed.follow(second, session_id=session_id, idle=0.05)
        assert isinstance(await anext(theirs), StatusChange)
        async with sessionmaker.begin() as db:
            await record.append_messages(
                db, session_id, second, [NewMessage(seq=0, role="user", content="not yours")]
            )
        # The other agent's own stream got the message: the feed has delivered it.
        got = [e async for e in _until_item(theirs)]
        assert got[-1].data["content"] == "not yours"
        rest = await asyncio.wait_for(_drain(stream), 30)
        await theirs.aclose()
    finally:
        await feed.close()
    assert [e for e in rest if isinstance(e, FeedItem)] == []
    (end,) = rest
    assert isinstance(end, StatusChange) and end.status == "erased" and end.final


async def _until_item(stream: AsyncIterator[FeedEntry]) -> AsyncIterator[FeedItem]:
    async for entry in stream:
        if isinstance(entry, FeedItem):
            yield entry
            return
