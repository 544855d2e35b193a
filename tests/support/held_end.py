"""Holding a session's last write up, to cancel the session while it is written: a lock on
the session's row (every record write of the session waits for it; what waits on it:
``tests.support.locks``), and whether the cancel landed (the held write's local activity
given up in the history)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import WorkflowHandle


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
