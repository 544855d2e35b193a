"""Holding a session's last write up, to cancel or signal the session while it is
written: a lock on the session's row (every record write of the session waits for it), or
the end's own event taken first by an open transaction (only the end's write waits for
it); what waits on them: ``tests.support.locks``. And whether the cancel landed (the held
write's local activity given up in the history)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import WorkflowHandle

from tests.support.locks import waiting_for_lock


@contextlib.asynccontextmanager
async def session_row_held(
    sessionmaker: async_sessionmaker[DbSession], session_id: str
) -> AsyncIterator[None]:
    """The session's row locked (``FOR UPDATE``) until the block ends."""
    async with sessionmaker() as db, db.begin():
        await db.execute(
            text("SELECT 1 FROM sessions WHERE id = :id FOR UPDATE"), {"id": session_id}
        )
        yield


@contextlib.asynccontextmanager
async def end_event_held(
    sessionmaker: async_sessionmaker[DbSession], session_id: str, agent_id: str, status: str
) -> AsyncIterator[None]:
    """The session's ``session_ended`` event (for ``status``) inserted by a transaction
    left open until the block ends, then rolled back: the session's end write, which
    inserts it, waits on it; the writes before the end do not."""
    async with sessionmaker() as db:
        await db.execute(
            text(
                "INSERT INTO events (session_id, agent_id, key, kind, step, payload, created_at) "
                "VALUES (:sid, :agent, :key, 'session_ended', 0, '{}', now())"
            ),
            {"sid": session_id, "agent": agent_id, "key": f"session:ended:{status}"},
        )
        try:
            yield
        finally:
            await db.rollback()


@contextlib.asynccontextmanager
async def end_write_waiting(
    sessionmaker: async_sessionmaker[DbSession],
    session_id: str,
    agent_id: str,
    status: str,
    database_url: str,
) -> AsyncIterator[None]:
    """``end_event_held``, entered once the session's end write waits on it."""
    async with end_event_held(sessionmaker, session_id, agent_id, status):
        deadline = time.monotonic() + 60
        while not await waiting_for_lock(database_url):
            if time.monotonic() > deadline:
                raise AssertionError(f"the end of {session_id} was not written within 60 s")
            await asyncio.sleep(0.1)
        yield


async def cancel_landed(handle: WorkflowHandle[Any, Any]) -> bool | None:
    """Whether the held write was given up for the cancel: a local activity's marker
    (cancelled) in the history after the cancel request."""
    seen = False
    for event in (await handle.fetch_history()).events:
        if event.HasField("workflow_execution_cancel_requested_event_attributes"):
            seen = True
        elif seen and event.HasField("marker_recorded_event_attributes"):
            return True
    return None


async def signals_in_history(handle: WorkflowHandle[Any, Any], count: int) -> bool | None:
    """Whether ``count`` signals are in the session's history (the server appends those
    sent during a workflow task once that task is heartbeaten or completed)."""
    history = await handle.fetch_history()
    signalled = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    return len(signalled) >= count or None
