"""Reading sessions across the record: lists with cursor paging, events by page, and the
approvals still waiting for a person.

Lists are ordered newest first by ``(created_at, id)`` and paged by keyset: a cursor
names the last row seen, and the next page starts strictly after it, so sessions started
meanwhile (always newer) never shift or repeat a page. Cursors are opaque to callers
(base64url of JSON); a cursor that does not decode is a ``BadCursor``.

These run on the system's connection: callers filter by the agents a caller may see.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.sql import sql
from vigil.schema import event_kinds, textcodec
from vigil.schema.payloads import FINAL_STATUSES, SessionStatus

MAX_PAGE = 500
OPEN_STATUSES = sorted(s.value for s in SessionStatus if s not in FINAL_STATUSES)
"""The statuses of a session that has not ended: a condition the statuses' index answers,
so what asks for open sessions never reads the ended ones the record keeps for good."""
_APPROVAL_ID = re.compile(r"^a(\d+)-(\d+)$")


class BadCursor(ValueError):
    """A paging cursor that this module did not make."""


@dataclass(frozen=True)
class SessionListRow:
    id: str
    agent_id: str
    goal: str
    status: str
    step: int
    created_at: datetime
    updated_at: datetime
    schedule_id: str | None


@dataclass(frozen=True)
class SessionListPage:
    rows: list[SessionListRow]
    next_cursor: str | None
    """Pass back as ``cursor`` for the next (older) page; None when this one is the last."""


def encode_cursor(created_at: datetime, session_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), session_id], ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        stamp, session_id = value
        moment = datetime.fromisoformat(stamp)
        if not isinstance(session_id, str) or moment.tzinfo is None or "\x00" in session_id:
            raise ValueError("bad cursor fields")
        moment.astimezone(UTC)  # OverflowError: a time in year 0 or 10000 once in UTC
        session_id.encode("utf-8")  # UnicodeError: a lone surrogate
    # RecursionError: JSON nested deeper than the parser goes (no cursor of ours is).
    except (
        ValueError,
        TypeError,
        UnicodeError,
        OverflowError,
        RecursionError,
        binascii.Error,
    ) as exc:
        raise BadCursor("not a cursor this API returned") from exc
    return moment, session_id


_LIST = sql(
    "SELECT id, agent_id, goal, status, step, created_at, updated_at, schedule_id "
    "FROM sessions "
    "WHERE (CAST(:agent AS text) IS NULL OR agent_id = :agent) "
    "AND (CAST(:agents AS text[]) IS NULL OR agent_id = ANY(:agents)) "
    "AND (CAST(:status AS text) IS NULL OR status = :status) "
    "AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since) "
    "AND (CAST(:sched AS text) IS NULL OR schedule_id = :sched) "
    "AND (CAST(:after_at AS timestamptz) IS NULL "
    "     OR (created_at, id) < (:after_at, CAST(:after_id AS text))) "
    "ORDER BY created_at DESC, id DESC LIMIT :lim"
)
"""A page of sessions, newest first (one agent's by the index on agent, time and id)."""


def _list_params(
    *,
    agent: str | None = None,
    agents: list[str] | None = None,
    status: str | None = None,
    since: datetime | None = None,
    schedule_id: str | None = None,
    cursor: str | None = None,
    limit: int,
) -> dict[str, Any]:
    """``_LIST``'s parameters for a page of ``limit`` rows (one more is asked, to know
    whether another page follows)."""
    after = decode_cursor(cursor) if cursor else None
    return {
        "agent": agent,
        "agents": agents,
        "status": status,
        "since": since,
        "sched": schedule_id,
        "after_at": after[0] if after else None,
        "after_id": after[1] if after else None,
        "lim": limit + 1,
    }


async def list_sessions(
    db: DbSession,
    *,
    agent: str | None = None,
    agents: list[str] | None = None,
    status: str | None = None,
    since: datetime | None = None,
    schedule_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> SessionListPage:
    """Sessions newest first; ``agents`` (when not None) limits them to those agents."""
    limit = max(1, min(limit, MAX_PAGE))
    params = _list_params(
        agent=agent, agents=agents, status=status, since=since, schedule_id=schedule_id,
        cursor=cursor, limit=limit,
    )  # fmt: skip
    rows = (await db.execute(_LIST, params)).mappings().all()
    page = [
        SessionListRow(
            id=r["id"],
            agent_id=r["agent_id"],
            goal=r["goal"],
            status=r["status"],
            step=r["step"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            schedule_id=r["schedule_id"],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return SessionListPage(
        page, encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
    )


@dataclass(frozen=True)
class EventRow:
    id: int
    """Increases with every event recorded: page with ``after``."""
    key: str
    kind: str
    step: int
    actor: str | None
    reason: str | None
    payload: dict[str, Any]
    created_at: datetime


async def recorded_ids(db: DbSession, session_ids: list[str]) -> set[str]:
    """Which of ``session_ids`` have a record row (one query, however many)."""
    if not session_ids:
        return set()
    rows = await db.execute(
        sql("SELECT id FROM sessions WHERE id = ANY(:ids)"), {"ids": list(session_ids)}
    )
    return {r[0] for r in rows}


async def keyed_generations(db: DbSession, agent_id: str, first_id: str) -> dict[int, str]:
    """The recorded sessions of one conversation key, as {generation: status}: the key's
    first session has ``first_id``, its later ones ``first_id-2``, ``first_id-3``...
    (workers/keyed.py)."""
    rows = await db.execute(
        sql(
            "SELECT id, status FROM sessions WHERE agent_id = :agent "
            "AND (id = :first OR starts_with(id, :prefix))"
        ),
        {"agent": agent_id, "first": first_id, "prefix": f"{first_id}-"},
    )
    found: dict[int, str] = {}
    for session_id, status in rows:
        suffix = session_id[len(first_id) + 1 :]
        if session_id == first_id:
            found[1] = status
        elif suffix.isascii() and suffix.isdigit() and not suffix.startswith("0"):
            found[int(suffix)] = status
    return found


async def last_seq(db: DbSession, session_id: str) -> int:
    """The highest seq of the session's transcript (-1: nothing recorded yet)."""
    found = await db.execute(
        sql("SELECT COALESCE(MAX(seq), -1) FROM messages WHERE session_id = :sid"),
        {"sid": session_id},
    )
    return int(found.scalar_one())


def _json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return textcodec.decode_json(value)


async def events_page(
    db: DbSession,
    session_id: str,
    *,
    after: int = 0,
    limit: int = 100,
    kind: str | None = None,
) -> list[EventRow]:
    """A session's events recorded after event ``after``, oldest first (call it acting
    for the session's agent). At most ``MAX_PAGE + 1``: a caller serving pages of up to
    ``MAX_PAGE`` reads one more to know whether another page follows."""
    limit = max(1, min(limit, MAX_PAGE + 1))
    rows = (
        await db.execute(
            sql(
                "SELECT id, key, kind, step, actor, reason, payload, created_at FROM events "
                "WHERE session_id = :sid AND id > :after "
                "AND (CAST(:kinds AS text[]) IS NULL OR kind = ANY(CAST(:kinds AS text[]))) "
                "ORDER BY id LIMIT :lim"
            ),
            {
                "sid": session_id,
                "after": after,
                "kinds": event_kinds.stored_as(kind) if kind is not None else None,
                "lim": limit,
            },
        )
    ).mappings()
    return [
        EventRow(
            id=r["id"],
            key=r["key"],
            kind=event_kinds.canonical(r["kind"]),
            step=r["step"],
            actor=r["actor"],
            reason=r["reason"],
            payload=_json(r["payload"]) or {},
            created_at=r["created_at"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class PendingApprovalRow:
    session_id: str
    agent_id: str
    approval_id: str
    step: int
    tool: str
    arguments: str
    """The call's arguments exactly as the model sent them (JSON text)."""
    digest: str | None
    requested_at: datetime


def _call_arguments(tool_calls: Any, approval_id: str) -> tuple[str | None, str | None]:
    """(name, arguments) of the call an approval id names, from its assistant message."""
    found = _APPROVAL_ID.fullmatch(approval_id)
    calls = _json(tool_calls)
    if found is None or not isinstance(calls, list):
        return None, None
    index = int(found.group(2))
    if index >= len(calls) or not isinstance(calls[index], dict):
        return None, None
    call = calls[index]
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    name = call.get("name")
    return (name if isinstance(name, str) else None), arguments


_PENDING = sql(
    "SELECT e.id, e.session_id, s.agent_id, e.step, e.payload, e.created_at, "
    "m.tool_calls "
    "FROM events e JOIN sessions s ON s.id = e.session_id "
    "LEFT JOIN LATERAL (SELECT tool_calls FROM messages "
    "  WHERE session_id = e.session_id AND step = e.step "
    "  AND role = 'assistant' AND tool_calls IS NOT NULL "
    "  ORDER BY seq DESC LIMIT 1) m ON true "
    "WHERE e.kind = 'approval_requested' "
    "AND s.status = ANY(CAST(:open AS text[])) "
    "AND (CAST(:agent AS text) IS NULL OR s.agent_id = :agent) "
    "AND (CAST(:agents AS text[]) IS NULL OR s.agent_id = ANY(:agents)) "
    "AND NOT EXISTS (SELECT 1 FROM events d WHERE d.session_id = e.session_id "
    "  AND d.key = 'approval:' || (e.payload->>'approval_id') || :decided) "
    "AND (CAST(:after_at AS timestamptz) IS NULL "
    "     OR (e.created_at, e.id) > (:after_at, CAST(:after_id AS bigint))) "
    "ORDER BY e.created_at, e.id LIMIT :lim"
)
"""The approvals waiting in sessions that have not ended, oldest first, after a cursor's
request event when given (keyset: decided ones never shift a page)."""


@dataclass(frozen=True)
class PendingApprovalPage:
    items: list[PendingApprovalRow]
    next_cursor: str | None
    """Pass back as ``cursor`` for the next (newer) page; None when this one is the last."""


def _approval_after(cursor: str | None) -> tuple[datetime | None, int | None]:
    """The request event a cursor names: its time and id."""
    if cursor is None:
        return None, None
    moment, event_id = decode_cursor(cursor)
    digits = event_id.isascii() and event_id.isdigit() and len(event_id) <= 19
    if not digits or int(event_id) >= 2**63:  # an event's id is a bigint
        raise BadCursor("not a cursor this API returned")
    return moment, int(event_id)


async def pending_approvals(
    db: DbSession,
    *,
    agent: str | None = None,
    agents: list[str] | None = None,
    limit: int = 200,
    cursor: str | None = None,
) -> PendingApprovalPage:
    """The approvals requested and not yet decided in sessions that have not ended, oldest
    first, one page; ``next_cursor`` continues after it. Derived from the record alone: an
    ``approval_requested`` event with no ``approval_decided`` event of the same id (its
    key, on the unique index), the exact arguments from the assistant message that made
    the call."""
    limit = max(1, min(limit, MAX_PAGE))
    after_at, after_id = _approval_after(cursor)
    rows = (
        (
            await db.execute(
                _PENDING,
                {
                    "open": OPEN_STATUSES,
                    "agent": agent,
                    "agents": agents,
                    "decided": ":decided",
                    "after_at": after_at,
                    "after_id": after_id,
                    "lim": limit + 1,  # one more, to know whether another page follows
                },
            )
        )
        .mappings()
        .all()
    )
    out: list[PendingApprovalRow] = []
    for r in rows[:limit]:
        payload = _json(r["payload"]) or {}
        approval_id = str(payload.get("approval_id", ""))
        name, arguments = _call_arguments(r["tool_calls"], approval_id)
        out.append(
            PendingApprovalRow(
                session_id=r["session_id"],
                agent_id=r["agent_id"],
                approval_id=approval_id,
                step=r["step"],
                tool=name or str(payload.get("tool", "")),
                arguments=arguments if arguments is not None else str(payload.get("arguments")),
                digest=payload.get("digest"),
                requested_at=r["created_at"],
            )
        )
    if len(rows) <= limit or not out:
        return PendingApprovalPage(out, None)
    last = rows[limit - 1]
    return PendingApprovalPage(out, encode_cursor(last["created_at"], str(last["id"])))


@dataclass(frozen=True)
class WaitingApprovals:
    """Approvals waiting for a person in one agent's live sessions (for metrics)."""

    agent_id: str
    waiting: int
    oldest_seconds: float
    """Age of the longest-waiting one, by the database's clock."""


_WAITING = sql(
    "SELECT s.agent_id, count(*) AS waiting, "
    "EXTRACT(EPOCH FROM (now() - min(e.created_at))) AS oldest "
    "FROM events e JOIN sessions s ON s.id = e.session_id "
    "WHERE e.kind = 'approval_requested' "
    "AND s.status = ANY(CAST(:open AS text[])) "
    "AND NOT EXISTS (SELECT 1 FROM events d WHERE d.session_id = e.session_id "
    "  AND d.key = 'approval:' || (e.payload->>'approval_id') || :decided) "
    "GROUP BY s.agent_id ORDER BY s.agent_id"
)
"""Per agent, the approvals waiting and the oldest one's age."""


async def approvals_waiting(db: DbSession) -> list[WaitingApprovals]:
    """Per agent, how many approvals wait and how old the oldest is: the same rule as
    :func:`pending_approvals` (requested, not decided, session not ended), counted."""
    rows = (
        await db.execute(
            _WAITING,
            {"open": OPEN_STATUSES, "decided": ":decided"},
        )
    ).all()
    return [
        WaitingApprovals(agent_id=r[0], waiting=int(r[1]), oldest_seconds=max(0.0, float(r[2])))
        for r in rows
    ]
