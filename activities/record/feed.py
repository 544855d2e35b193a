"""The record side of the live feed: catch-up reads and the notifications of tokens.

A follower's position in a session (or in an agent's sessions) is a ``FeedCursor``: the
last message id and the last event id it has seen. Both are the rows' ``bigserial`` ids,
which grow in commit order within a session, because a session's writes are sequential
(its workflow awaits each recording activity before the next). Resuming "after the
cursor" is therefore exact: every message and event is read once, none skipped. An
agent's sessions write at once, and their rows commit in another order than their ids':
a reader of them together reads up to ``settled_bound`` only, below which every row that
will ever be there is.

Callers run these reads acting for the agent (``rls.acting_for``); the queries trust
row-level security to hide every other agent's rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Text, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.lean import Statements
from vigil.activities.record.sql import sql
from vigil.activities.record.store import (
    _MESSAGE_COLUMNS,
    StoredMessage,
    _event,
    _message,
    feed_hold_key,
)
from vigil.schema.names import TOKEN_CHANNEL_PREFIX

ItemKind = Literal["message", "event"]
MAX_NOTIFY_BYTES = 7000
"""PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; ours stay well below."""
MAX_ROW_ID = 2**63 - 1
"""The largest row id PostgreSQL's bigint holds: a position past it is none of ours."""


@dataclass(frozen=True, order=True)
class FeedCursor:
    """What a follower has seen: messages up to ``message_id``, events up to ``event_id``."""

    message_id: int = 0
    event_id: int = 0

    def text(self) -> str:
        """The SSE ``id:`` of this position (``Last-Event-ID`` gives it back)."""
        return f"{self.message_id}.{self.event_id}"

    @classmethod
    def parse(cls, value: str | None) -> FeedCursor:
        """A cursor from its text; ``ValueError`` when it is not one of ours."""
        if value is None or not value.strip():
            return cls()
        parts = value.strip().split(".")
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts):
            raise ValueError(f"not a stream position: {value[:60]!r}")
        message_id, event_id = int(parts[0]), int(parts[1])
        if max(message_id, event_id) > MAX_ROW_ID:  # nineteen digits can pass bigint's range
            raise ValueError(f"not a stream position: {value[:60]!r}")
        return cls(message_id, event_id)

    def seen(self, item: FeedItem) -> bool:
        mark = self.message_id if item.kind == "message" else self.event_id
        return item.key <= mark

    def after(self, item: FeedItem) -> FeedCursor:
        if item.kind == "message":
            return FeedCursor(max(self.message_id, item.key), self.event_id)
        return FeedCursor(self.message_id, max(self.event_id, item.key))


@dataclass(frozen=True)
class FeedItem:
    """One recorded message or event, ready to send (``data`` is JSON-ready)."""

    kind: ItemKind
    key: int
    """The row's id: its place in the feed."""
    session_id: str
    agent_id: str
    event_kind: str | None
    """For events: the event's own kind (``approval_requested``, ``tool_call``...)."""
    data: dict[str, Any]
    message: StoredMessage | None = None
    """For messages: the message itself (what the client's ``follow`` yields)."""


def _message_item(row: Any) -> FeedItem:
    msg = _message(row)
    return FeedItem(
        kind="message",
        key=int(row["id"]),
        session_id=msg.session_id,
        agent_id=row["agent_id"],
        event_kind=None,
        data={
            "session_id": msg.session_id,
            "seq": msg.seq,
            "step": msg.step,
            "role": msg.role,
            "name": msg.name,
            "content": msg.content,
            "tool_calls": msg.tool_calls,
            "tool_call_id": msg.tool_call_id,
            "created_at": msg.created_at.isoformat(),
        },
        message=msg,
    )


def _event_item(row: Any) -> FeedItem:
    ev = _event(row)
    return FeedItem(
        kind="event",
        key=int(row["id"]),
        session_id=row["session_id"],
        agent_id=row["agent_id"],
        event_kind=ev.kind,
        data={
            "session_id": row["session_id"],
            "key": ev.key,
            "kind": ev.kind,
            "step": ev.step,
            "actor": ev.actor,
            "reason": ev.reason,
            "payload": ev.payload,
            "created_at": ev.created_at.isoformat(),
        },
    )


_EVENT_COLUMNS = "id, session_id, agent_id, key, kind, step, actor, reason, payload, created_at"


def _merged(messages: list[FeedItem], events: list[FeedItem]) -> list[FeedItem]:
    """One order for a reader: by time of the write, messages before the events written
    with them (a model reply before its usage event). Each kind stays in id order. Not by
    an action's own time: a session's end (the workflow's clock) would then come before
    the last messages written with it, and a stream ends at its end event; `vigil follow`
    places a decision before the result it approved itself (workers/cli/follow.py)."""
    # A merge, not a sort: in an agent's stream a transaction that began earlier (its
    # rows' time) can hold larger ids than one that began later, and a sort by time put
    # a kind's rows out of id order, whose positions a resume would then skip.
    out: list[FeedItem] = []
    m = e = 0
    while m < len(messages) and e < len(events):
        if (messages[m].data["created_at"], 0) <= (events[e].data["created_at"], 1):
            out.append(messages[m])
            m += 1
        else:
            out.append(events[e])
            e += 1
    return out + messages[m:] + events[e:]


def _until_later(items: list[FeedItem], last: Any) -> list[FeedItem]:
    """The items (in id order) before the first one written after ``last``: a prefix, so
    the kind's position never passes one it has not given."""
    for i, item in enumerate(items):
        if item.data["created_at"] > last:
            return items[:i]
    return items


_LAST_IDS = sql(
    "SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence('messages', 'id') AS regclass)) "
    "AS m, pg_sequence_last_value(CAST(pg_get_serial_sequence('events', 'id') AS regclass)) AS e"
)
# The transactions holding the agent's feed lock (an advisory lock on a 64-bit key shows in
# pg_locks as its high and low 32 bits, objsubid 1).
_HOLDERS = (
    "SELECT {what} FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND CAST(classid AS bigint) = (hashtextextended(:feed, 0) >> 32) & 4294967295 "
    "AND CAST(objid AS bigint) = hashtextextended(:feed, 0) & 4294967295"
)
_WRITING = sql(_HOLDERS.format(what="DISTINCT virtualtransaction"))
_STILL_WRITING = sql(_HOLDERS.format(what="count(*) AS n") + " AND virtualtransaction = ANY(:held)")


@dataclass(frozen=True)
class Settling:
    """The position up to which an agent's record will be settled (``bound``) once the
    writes in flight when it was read (``writing``) have ended."""

    bound: FeedCursor
    writing: list[str]
    agent_id: str


async def settled_bound(db: Statements, agent_id: str) -> Settling:
    """The last message and event ids given out, and the writes of the agent's rows in
    flight (``store.feed_hold_key``): once those have committed or rolled back
    (``still_writing``), every row of the agent up to the bound that will ever be there
    is. Ids are given out in one order and committed in another (two sessions write at
    once), so a reader of the agent's sessions together that went past a row still being
    written would never read it, and a reader resuming from its position would skip it.
    Each write holds the lock from before its rows take their ids until it ends, so a
    write holding an id up to the bound is among those listed here (read after the ids).
    Nothing waits on a lock: writers are never held up by readers."""
    last = (await db.execute(_LAST_IDS)).mappings().one()
    rows = (await db.execute(_WRITING, {"feed": feed_hold_key(agent_id)})).mappings().all()
    return Settling(
        FeedCursor(int(last["m"] or 0), int(last["e"] or 0)),
        [str(r["virtualtransaction"]) for r in rows],
        agent_id,
    )


async def still_writing(db: Statements, settling: Settling) -> bool:
    """Whether a write listed by ``settled_bound`` is still in flight."""
    if not settling.writing:
        return False
    row = (
        (
            await db.execute(
                _STILL_WRITING, {"feed": feed_hold_key(settling.agent_id), "held": settling.writing}
            )
        )
        .mappings()
        .one()
    )
    return int(row["n"]) > 0


async def items_after(
    db: Statements,
    cursor: FeedCursor,
    *,
    session_id: str | None = None,
    agent_id: str | None = None,
    limit: int = 500,
    until: FeedCursor | None = None,
) -> list[FeedItem]:
    """Up to ``limit`` messages and ``limit`` events after ``cursor``, of one session or
    of one agent's sessions, and none past ``until`` (``settled_bound``). Call again with
    the advanced cursor until it returns []."""
    if (session_id is None) == (agent_id is None):
        raise ValueError("give exactly one of session_id or agent_id")
    where = "session_id = :owner" if session_id is not None else "agent_id = :owner"
    bound = until or FeedCursor(MAX_ROW_ID, MAX_ROW_ID)
    owner = session_id if session_id is not None else agent_id
    # One statement, so one snapshot: a transaction that commits while this reads (a
    # reply and its usage event) is seen whole or not at all. Read in two statements, its
    # event could come in this read and its message only in the next one.
    rows = (
        await db.execute(
            sql(
                "WITH m AS (SELECT * FROM messages "
                f"WHERE {where} AND id > :after_m AND id <= :until_m ORDER BY id LIMIT :lim), "
                "e AS (SELECT * FROM events "
                f"WHERE {where} AND id > :after_e AND id <= :until_e ORDER BY id LIMIT :lim) "
                "SELECT true AS is_message, id, session_id, agent_id, created_at, step, seq, "
                "role, content, content_enc, name, tool_calls, tool_call_id, "
                "NULL::text AS key, NULL::text AS kind, NULL::text AS actor, "
                "NULL::text AS reason, NULL::jsonb AS payload FROM m "
                "UNION ALL SELECT false, id, session_id, agent_id, created_at, step, NULL, "
                "NULL, NULL, NULL, NULL, NULL, NULL, key, kind, actor, reason, payload FROM e "
                "ORDER BY is_message DESC, id"
            ),
            {
                "owner": owner,
                "after_m": cursor.message_id,
                "after_e": cursor.event_id,
                "until_m": bound.message_id,
                "until_e": bound.event_id,
                "lim": limit,
            },
        )
    ).mappings()
    messages: list[FeedItem] = []
    events: list[FeedItem] = []
    for row in rows:
        if row["is_message"]:
            messages.append(_message_item(row))
        else:
            events.append(_event_item(row))
    if len(messages) == limit and events:
        # Keep a reader's order: events written after the page's last message wait for
        # the next page (the cursor is per kind: cut at the first such event, never past it).
        events = _until_later(events, messages[-1].data["created_at"])
    elif len(events) == limit and messages:
        messages = _until_later(messages, events[-1].data["created_at"])
    return _merged(messages, events)


async def items_by_id(
    db: DbSession, message_ids: list[int], event_ids: list[int]
) -> list[FeedItem]:
    """The rows notifications named (one query per kind, however many followers)."""
    messages: list[FeedItem] = []
    events: list[FeedItem] = []
    if message_ids:
        rows = (
            await db.execute(
                sql(
                    f"SELECT id, agent_id, {_MESSAGE_COLUMNS} FROM messages "
                    "WHERE id = ANY(:ids) ORDER BY id"
                ),
                {"ids": message_ids},
            )
        ).mappings()
        messages = [_message_item(r) for r in rows]
    if event_ids:
        rows = (
            await db.execute(
                sql(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ANY(:ids) ORDER BY id"),
                {"ids": event_ids},
            )
        ).mappings()
        events = [_event_item(r) for r in rows]
    return _merged(messages, events)


async def approvals_before(db: DbSession, session_id: str, cursor: FeedCursor) -> list[FeedItem]:
    """What a reader resuming at ``cursor`` needs to keep a decision before the result of
    the call it approved: the last model reply with tool calls up to the cursor, and the
    approvals asked and decided since its step (``InOrder`` is primed with them)."""
    if cursor == FeedCursor():
        return []
    reply = (
        (
            await db.execute(
                sql(
                    f"SELECT id, agent_id, {_MESSAGE_COLUMNS} FROM messages "
                    "WHERE session_id = :s AND id <= :m AND role = 'assistant' "
                    "AND tool_calls IS NOT NULL ORDER BY id DESC LIMIT 1"
                ),
                {"s": session_id, "m": cursor.message_id},
            )
        )
        .mappings()
        .first()
    )
    if reply is None:
        return []
    rows = (
        await db.execute(
            sql(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE session_id = :s AND id <= :e "
                "AND step >= :step AND kind IN ('approval_requested', 'approval_decided') "
                "ORDER BY id"
            ),
            {"s": session_id, "e": cursor.event_id, "step": reply["step"]},
        )
    ).mappings()
    return [_message_item(reply), *(_event_item(r) for r in rows)]


@dataclass(frozen=True)
class SessionStatusRow:
    session_id: str
    status: str
    step: int
    summary: str | None


async def session_status(db: DbSession, session_id: str) -> SessionStatusRow | None:
    found = await session_statuses(db, [session_id])
    return found[0] if found else None


async def session_statuses(db: DbSession, session_ids: list[str]) -> list[SessionStatusRow]:
    """Where these sessions stand now (those the acting agent may see)."""
    if not session_ids:
        return []
    rows = await db.execute(
        sql("SELECT id, status, step, summary FROM sessions WHERE id = ANY(:ids)"),
        {"ids": session_ids},
    )
    return [SessionStatusRow(r[0], r[1], r[2], r[3]) for r in rows]


# --- tokens --------------------------------------------------------------------------


def token_channel(agent_id: str) -> str:
    """The channel carrying the model tokens of ``agent_id``'s sessions."""
    return TOKEN_CHANNEL_PREFIX + hashlib.sha256(agent_id.encode()).hexdigest()[:40]


TOKEN_CHUNK_CHARS = 300
"""Characters of text per notification: 300 characters JSON-escaped (at most 12 bytes
each) plus a session id of 200 and the envelope stay under MAX_NOTIFY_BYTES."""


def token_payloads(
    session_id: str, seq: int, attempt: int, first_index: int, delta: str
) -> list[str]:
    """``delta`` as NOTIFY payloads of the token channel, split to fit the cap."""
    out: list[str] = []
    for n, start in enumerate(range(0, len(delta), TOKEN_CHUNK_CHARS)):
        part = delta[start : start + TOKEN_CHUNK_CHARS]
        out.append(
            json.dumps({"s": session_id, "q": seq, "t": attempt, "n": first_index + n, "d": part})
        )
    return out


async def notify_tokens(db: Statements, channel: str, payloads: list[str]) -> None:
    """Send token notifications, in order, in one statement (delivered when its
    transaction commits)."""
    if payloads:
        await db.execute(_NOTIFY_TOKENS, {"ch": channel, "ps": payloads})


_NOTIFY_TOKENS = sql(
    "SELECT pg_notify(:ch, p.payload) FROM unnest(:ps) WITH ORDINALITY AS p(payload, n) "
    "ORDER BY p.n"
).bindparams(bindparam("ps", type_=ARRAY(Text)))
