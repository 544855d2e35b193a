"""A follower never reads a transaction's event without the message written with it.

The feed reads a session's new messages and new events for a follower. Read in two
statements, a transaction that committed between them (a model reply and its usage event)
was seen half: its event in this read, its message only in the next, so a live stream
showed the usage event before the reply it belongs to, and a resumed stream differed from
the record read whole. Found when session steps got faster (the API's stream tests failed
now and then).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import store as record
from vigil.activities.record.feed import FeedCursor, FeedItem, items_after
from vigil.activities.record.rls import acting_for


class CommitsAfterFirstStatement:
    """A reader's transaction; after its first statement, another transaction commits."""

    def __init__(self, db: DbSession, write: Callable[[], Awaitable[None]]) -> None:
        self._db = db
        self._write: Callable[[], Awaitable[None]] | None = write

    async def execute(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        result = await self._db.execute(statement, params)
        if self._write is not None:
            write, self._write = self._write, None
            await write()
        return result


def _keys(items: list[FeedItem]) -> list[tuple[str, object]]:
    return [(i.kind, i.data.get("seq", i.data.get("key"))) for i in items]


async def test_a_reply_and_its_event_committed_mid_read_come_together_in_order(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent, sid = f"feed-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(db, session_id=sid, agent_id=agent, goal="g", status="running")
        await record.append_messages(
            db, sid, agent, [record.NewMessage(seq=0, role="user", content="go")]
        )

    async def reply() -> None:
        async with acting_for(sessionmaker, agent) as db:
            await record.append_record(
                db,
                sid,
                agent,
                [record.NewMessage(seq=1, role="assistant", content="hello", step=1)],
                [record.NewEvent(key="model:1", kind="model_call", step=1)],
            )

    def after(items: list[FeedItem]) -> FeedCursor:
        return FeedCursor(
            message_id=max([0] + [i.key for i in items if i.kind == "message"]),
            event_id=max([0] + [i.key for i in items if i.kind == "event"]),
        )

    async with acting_for(sessionmaker, agent) as db:
        seen = await items_after(
            CommitsAfterFirstStatement(db, reply), FeedCursor(), session_id=sid
        )
    while True:  # read on as a follower does, until nothing is new
        async with acting_for(sessionmaker, agent) as db:
            items = await items_after(db, after(seen), session_id=sid)
        if not items:
            break
        seen += items
    assert _keys(seen) == [("message", 0), ("message", 1), ("event", "model:1")]
