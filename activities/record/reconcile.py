"""Queries of the reconciler: sessions whose record is not final, and closing one whose
workflow ended outside vigil's control (see workers/reconcile.py).

Closing writes what the workflow's own ending would have: every tool call of the last
step answered, a final system message, the final status and end time, plus a
``session_reconciled`` event that says why. It is conditional (a row that became final
meanwhile is left alone) and idempotent (messages and events are keyed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.sessions import OPEN_STATUSES
from vigil.activities.record.store import (
    NewEvent,
    NewMessage,
    append_messages,
    record_events,
    update_session,
)
from vigil.schema import event_kinds, textcodec
from vigil.schema.payloads import FINAL_STATUSES
from vigil.schema.tools import BUILTIN_TOOLS

OPEN_SESSIONS = text(
    "SELECT id, agent_id, status, updated_at FROM sessions "
    "WHERE status = ANY(:open) AND id > :after "
    "AND updated_at <= now() - CAST(:idle AS interval) "
    "AND (CAST(:ids AS text[]) IS NULL OR id = ANY(:ids)) "
    "ORDER BY id LIMIT :lim"
)
"""A page of the sessions not ended, by id."""


@dataclass(frozen=True)
class OpenSession:
    id: str
    agent_id: str
    status: str
    updated_at: datetime


async def open_sessions(
    db: DbSession,
    *,
    idle_for: timedelta = timedelta(0),
    after_id: str = "",
    session_ids: list[str] | None = None,
    limit: int = 200,
) -> list[OpenSession]:
    """Sessions not in a final status and not updated for ``idle_for``, by id, one page."""
    rows = (
        await db.execute(
            OPEN_SESSIONS,
            {
                "open": OPEN_STATUSES,
                "idle": idle_for,
                "after": after_id,
                "ids": session_ids,
                "lim": limit,
            },
        )
    ).mappings()
    return [OpenSession(**r) for r in rows]


async def close_ended_session(
    db: DbSession, session_id: str, *, status: str, reason: str, details: dict[str, Any]
) -> str | None:
    """Mark a session whose workflow has ended as ``status``; returns the status it had, or
    None when it had none to change (gone, or final already)."""
    row = (
        (
            await db.execute(
                text("SELECT agent_id, status, step FROM sessions WHERE id = :id FOR UPDATE"),
                {"id": session_id},
            )
        )
        .mappings()
        .first()
    )
    if row is None or row["status"] in FINAL_STATUSES:
        return None
    agent_id, previous, step = row["agent_id"], row["status"], row["step"]
    messages = await _closing_messages(db, session_id, status, reason, step)
    await append_messages(db, session_id, agent_id, messages)
    await update_session(db, session_id, status=status, summary=reason, finished=True)
    await record_events(
        db,
        session_id,
        agent_id,
        [
            NewEvent(
                # One per closed run: a reset run that ends outside vigil again is recorded too.
                key=f"session:reconciled:{details.get('run_id') or status}",
                kind=event_kinds.SESSION_RECONCILED,
                step=step,
                actor="reconciler",
                reason=reason,
                payload={"previous_status": previous, "status": status, **details},
            )
        ],
    )
    return str(previous)


async def _closing_messages(
    db: DbSession, session_id: str, status: str, reason: str, step: int
) -> list[NewMessage]:
    """Results for the last step's unanswered tool calls, then the ending, after the
    transcript's last seq (a call's result always follows its assistant message)."""
    last = (
        (
            await db.execute(
                text(
                    "SELECT seq, step, tool_calls FROM messages WHERE session_id = :sid "
                    "AND role = 'assistant' ORDER BY seq DESC LIMIT 1"
                ),
                {"sid": session_id},
            )
        )
        .mappings()
        .first()
    )
    tail = (
        await db.execute(
            text("SELECT COALESCE(MAX(seq), -1) FROM messages WHERE session_id = :sid"),
            {"sid": session_id},
        )
    ).scalar_one()
    seq = int(tail) + 1
    out: list[NewMessage] = []
    if last is not None and last["tool_calls"]:
        answered = set(
            (
                await db.execute(
                    text(
                        "SELECT tool_call_id FROM messages WHERE session_id = :sid "
                        "AND role = 'tool' AND seq > :seq"
                    ),
                    {"sid": session_id, "seq": last["seq"]},
                )
            ).scalars()
        )
        calls = _calls(last["tool_calls"])
        for call in calls:
            call_id = str(call.get("id", ""))
            if call_id in answered:
                continue
            name = str(call.get("name", ""))
            out.append(
                NewMessage(
                    seq=seq,
                    role="tool",
                    # The call may have run before the workflow ended; no result reached
                    # the record, which is all that can be said.
                    content=f"error: no result recorded: the session ended ({status}) first",
                    step=last["step"],
                    name=name if name in BUILTIN_TOOLS else None,
                    tool_call_id=call_id,
                )
            )
            seq += 1
    out.append(
        NewMessage(
            seq=seq,
            role="system",
            content=f"Session ended: {status}. {reason}",
            step=step,
            name="vigil",
        )
    )
    return out


def _calls(raw: Any) -> list[dict[str, Any]]:
    value = textcodec.decode_json(json.loads(raw) if isinstance(raw, str) else raw)
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []
