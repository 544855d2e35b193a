"""Queries of the session record: agents, sessions, messages, events.

Every write is idempotent: messages on (session_id, seq), events on (session_id, key),
sessions and agents on their primary keys. A retried or re-run activity therefore
leaves no duplicate and no gap. Sessions and agents are created by the system (the
owner's connection); messages and events are appended acting for the agent
(``rls.acting_for``), and the database keeps them append-only. Text passes through
``schema.textcodec`` so any Python string is stored and read back identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.lean import Statements, one_row
from vigil.activities.record.order import action_at
from vigil.activities.record.sql import sql
from vigil.schema import event_kinds, textcodec


@dataclass(frozen=True)
class NewMessage:
    seq: int
    role: str
    content: str
    step: int = 0
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    session_id: str
    seq: int
    role: str
    content: str
    step: int
    name: str | None
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class NewEvent:
    key: str
    kind: str
    step: int = 0
    actor: str | None = None
    reason: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionRow:
    id: str
    agent_id: str
    goal: str
    status: str
    step: int
    run_count: int
    schedule_id: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    summary: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    metadata: dict[str, Any]
    agent_version: int | None = None
    """The version of its agent's definition the session runs (None: an agent without
    one, or a read that does not carry it, as the model call's context read)."""


def _jsonb(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(textcodec.encode_json(value))


def from_jsonb(value: Any) -> Any:
    """A JSON or JSONB column as read by either driver path (text or decoded), with
    vigil's text encoding undone."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return textcodec.decode_json(value)


async def ensure_agent(db: Statements, agent_id: str, name: str | None = None) -> None:
    await db.execute(
        sql("INSERT INTO agents (id, name) VALUES (:id, :name) ON CONFLICT (id) DO NOTHING"),
        {"id": agent_id, "name": name or agent_id},
    )


async def create_session(
    db: Statements,
    *,
    session_id: str,
    agent_id: str,
    goal: str,
    status: str,
    schedule_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> bool:
    """Insert the session row (and its agent's); False when it already existed (a retry
    or continue-as-new). ``created_at``: when the session was started, if not now."""
    created, _ = await open_session_row(
        db,
        session_id=session_id,
        agent_id=agent_id,
        goal=goal,
        status=status,
        schedule_id=schedule_id,
        metadata=metadata,
        created_at=created_at,
    )
    return created


_OPEN_SESSION = sql(
    # A session an erasure took (by its id, or all its agent's) while a write of its
    # opening was on the way (a model call in flight as it was erased) is not opened
    # again: its goal would come back. A session given the same id after the erasure
    # (a key's next session) started after it, and is.
    "WITH erased AS (SELECT EXISTS (SELECT 1 FROM erasure_receipts "
    "  WHERE ((subject_kind = 'session' AND subject_id = CAST(:id AS text)) "
    "    OR (subject_kind = 'agent' AND subject_id = CAST(:agent AS text))) "
    "  AND erased_at >= COALESCE(CAST(:created AS timestamptz), now())) AS yes), "
    "agent AS (INSERT INTO agents (id, name) "
    "SELECT CAST(:agent AS text), CAST(:agent AS text) WHERE NOT (SELECT yes FROM erased) "
    "ON CONFLICT (id) DO NOTHING), "
    "created AS (INSERT INTO sessions "
    "(id, agent_id, goal, status, schedule_id, metadata, created_at, agent_version) "
    "SELECT CAST(:id AS text), CAST(:agent AS text), :goal, :status, :schedule, "
    "CAST(:meta AS jsonb), COALESCE(CAST(:created AS timestamptz), now()), :version "
    "WHERE NOT (SELECT yes FROM erased) "
    "ON CONFLICT (id) DO NOTHING RETURNING id) "
    "SELECT EXISTS (SELECT 1 FROM created) AS created, there.agent_id AS holder, "
    "there.created_at AS opened_at, (SELECT yes FROM erased) AS erased "
    "FROM (SELECT 1) AS one LEFT JOIN sessions AS there ON there.id = CAST(:id AS text)"
)


class EarlierSession(Exception):
    """The session an opening names is another, earlier one: its row was opened for a
    workflow started at another time (the id given again once that one had closed: a
    schedule's backfill of a run it made, a plain Temporal start)."""

    def __init__(self, session_id: str, opened_at: datetime) -> None:
        super().__init__(
            f"session id {session_id!r} belongs to an earlier session (started "
            f"{opened_at.isoformat()}): its record stands, and this run writes nothing to it"
        )


class SessionErased(Exception):
    """The session an opening names was erased after it started."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} was erased: its record is not written again")
        self.session_id = session_id


async def open_session_row(
    db: Statements,
    *,
    session_id: str,
    agent_id: str,
    goal: str,
    status: str,
    schedule_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    agent_version: int | None = None,
) -> tuple[bool, str | None]:
    """The agent's row and the session's (with its agent version) in one statement:
    (whether the session's row was created, the agent of the row that was there already).
    EarlierSession when the row there was opened for a workflow that started at another
    time than ``created_at`` (a retry of this opening gives the same time).
    The agent is None when the row is new, and when another transaction created it
    meanwhile (this statement's snapshot is older than that row): ask ``session_agent``
    then. SessionErased when an erasure took the session (or its agent's) after it
    started."""
    stored_goal = textcodec.plain(goal)
    row = (
        await db.execute(
            _OPEN_SESSION,
            {
                "id": session_id,
                "agent": agent_id,
                "goal": stored_goal,
                "status": status,
                "schedule": schedule_id,
                "meta": _jsonb(metadata or {}),
                "created": created_at,
                "version": agent_version,
            },
        )
    ).one()
    if row.erased:
        raise SessionErased(session_id)
    if (
        not row.created
        and created_at is not None
        and row.opened_at is not None
        and row.opened_at != created_at
    ):
        raise EarlierSession(session_id, row.opened_at)
    return bool(row.created), row.holder


async def session_agent(db: Statements, session_id: str) -> str | None:
    """The agent a session belongs to (None when there is no such session, or none the
    current agent may see)."""
    found = await db.execute(
        sql("SELECT agent_id FROM sessions WHERE id = :id"), {"id": session_id}
    )
    return found.scalar_one_or_none()


async def update_session(
    db: Statements,
    session_id: str,
    *,
    status: str | None = None,
    step: int | None = None,
    goal: str | None = None,
    summary: str | None = None,
    finished: bool = False,
    run_count: int | None = None,
    until_ended: EndGuard | None = None,
) -> bool:
    """Change the session's row; whether it was changed. ``until_ended``: only while the
    guard's run has recorded no other end of the session (see ``EndGuard``)."""
    sets = ["updated_at = now()"]
    params: dict[str, Any] = {"id": session_id}
    if status is not None:
        sets.append("status = :status")
        params["status"] = status
    if step is not None:
        sets.append("step = GREATEST(step, :step)")
        params["step"] = step
    if goal is not None:
        sets.append("goal = :goal")
        params["goal"] = textcodec.plain(goal)
    if summary is not None:
        sets.append("summary = :summary")
        params["summary"] = textcodec.plain(summary)
    if run_count is not None:
        sets.append("run_count = GREATEST(run_count, :runs)")
        params["runs"] = run_count
    if finished:
        sets.append("finished_at = COALESCE(finished_at, now())")
    elif status is not None:
        # Running again (a reset run goes on after the reconciler ended it): it has no end
        # until it ends again, and retention counts from that end.
        sets.append("finished_at = NULL")
    statement = f"UPDATE sessions SET {', '.join(sets)} WHERE id = :id"
    if until_ended is None:
        await db.execute(sql(statement), params)
        return True
    params.update(until_ended.params())
    guarded = f"{statement} AND NOT EXISTS ({_OTHER_END.format(sid=':id')}) RETURNING 1"
    return (await db.execute(sql(guarded), params)).first() is not None


@dataclass(frozen=True)
class EndGuard:
    """A write of one workflow run that must not follow another end of the session that
    run recorded: an end written in a workflow task Temporal refused, whose retry took
    another path. ``own_seq`` and ``own_status``: the end this write writes (a retried
    end write), None for a write of a session that goes on. Ends recorded by other runs
    (a reset run's, one written before ends named their run) never stop a write."""

    run_id: str
    own_seq: int | None = None
    own_status: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "guard_run": self.run_id,
            "guard_seq": None if self.own_seq is None else str(self.own_seq),
            "guard_status": self.own_status,
        }


_OTHER_END = (
    "SELECT x.payload->>'status' FROM events x WHERE x.session_id = {sid} "
    "AND x.kind = 'session_ended' AND x.payload->>'run_id' = CAST(:guard_run AS text) "
    "AND (x.payload->>'seq', x.payload->>'status') IS DISTINCT FROM "
    "(CAST(:guard_seq AS text), CAST(:guard_status AS text))"
)
"""The status of an end the guard's run recorded that is not the guarded write's own."""


_SESSION_COLUMNS = (
    "id, agent_id, goal, status, step, run_count, schedule_id, tokens_in, tokens_out, "
    "cost_usd, summary, created_at, updated_at, finished_at, metadata, agent_version"
)


_GET_SESSION = sql(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE id = :id")


def _session(row: Any) -> SessionRow:
    data = {name: row[name] for name in SessionRow.__dataclass_fields__ if name in row}
    data["cost_usd"] = float(data["cost_usd"])
    data["metadata"] = from_jsonb(data["metadata"]) or {}
    return SessionRow(**data)


def _at(value: Any) -> Any:
    """A timestamp read as JSON (ISO 8601, as PostgreSQL writes it) as a datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _session_json(row: dict[str, Any]) -> SessionRow:
    """A session row read as JSON (``row_to_json`` of the columns ``get_session`` reads)."""
    return _session(
        {
            **row,
            "created_at": _at(row["created_at"]),
            "updated_at": _at(row["updated_at"]),
            "finished_at": _at(row["finished_at"]),
        }
    )


async def get_session(db: Statements, session_id: str) -> SessionRow | None:
    row = (await db.execute(_GET_SESSION, {"id": session_id})).mappings().first()
    return _session(row) if row is not None else None


async def append_messages(
    db: Statements, session_id: str, agent_id: str, messages: list[NewMessage]
) -> int:
    """Insert messages at their seq; existing (session_id, seq) rows are kept. Returns inserts."""
    inserted, _ = await append_record(db, session_id, agent_id, messages, [])
    return inserted


_ROWS_PER_STATEMENT = 500
"""Messages (and events) written by one statement: 500 of each stay far below
PostgreSQL's limit of 32,767 parameters per statement."""


_MESSAGE_INSERT = (
    "INSERT INTO messages (session_id, agent_id, seq, role, content, content_enc, "
    "name, tool_calls, tool_call_id, step)"
)
_EVENT_INSERT = "INSERT INTO events (session_id, agent_id, key, kind, step, actor, reason, payload)"


def feed_hold_key(agent_id: str) -> str:
    """The advisory lock every write of an agent's messages and events holds, shared, from
    before its rows take their ids until it ends. A reader of the agent's sessions together
    (its live stream) lists the writes holding it after reading the last ids given out and
    reads up to those ids once they have ended (``record.feed.settled_bound``): a position
    in ids is then one it can resume from exactly. No one takes it exclusively."""
    return "vigil.feed:" + agent_id


def _record_parts(
    session_id: str,
    agent_id: str,
    messages: list[NewMessage],
    events: list[NewEvent],
    *,
    names: tuple[str, str] = ("m", "e"),
    when: str | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The messages and events INSERTs of one ``WITH`` (named ``names``), and their
    parameters: each row idempotent on its key. ``when``: a condition the rows are
    written under. Each INSERT takes the agent's feed lock (``feed_hold_key``) in a
    condition evaluated once before its first row takes an id."""
    m, e = names
    params: dict[str, Any] = {"sid": session_id, "agent": agent_id, "feed": feed_hold_key(agent_id)}
    parts: list[str] = []
    # Typed here: rows selected from a VALUES list leave a parameter as text.
    number, small = "CAST({} AS integer)", "CAST({} AS smallint)"
    # A scalar subquery of parameters alone: a one-time filter, run before the rows (and
    # their ``nextval``) are made. ``pg_advisory_xact_lock_shared`` returns void: '' as text.
    hold = "(SELECT CAST(pg_advisory_xact_lock_shared(hashtextextended(:feed, 0)) AS text) = '')"
    condition = hold if when is None else f"{hold} AND {when}"

    def rows_of(values: list[str]) -> str:
        return f"SELECT * FROM (VALUES {', '.join(values)}) AS v WHERE {condition}"

    if messages:
        rows = []
        for i, msg in enumerate(messages):
            k = f"{m}{i}"
            content, enc = textcodec.encode(msg.content)
            rows.append(
                f"(:sid, :agent, {number.format(f':seq{k}')}, :role{k}, :content{k}, "
                f"{small.format(f':enc{k}')}, :name{k}, CAST(:calls{k} AS jsonb), :call_id{k}, "
                f"{number.format(f':step{k}')})"
            )
            params.update(
                {
                    f"seq{k}": msg.seq,
                    f"role{k}": msg.role,
                    f"content{k}": content,
                    f"enc{k}": enc,
                    f"name{k}": msg.name,
                    f"calls{k}": _jsonb(msg.tool_calls),
                    f"call_id{k}": msg.tool_call_id,
                    f"step{k}": msg.step,
                }
            )
        parts.append(
            f"{m} AS ({_MESSAGE_INSERT} {rows_of(rows)} "
            "ON CONFLICT (session_id, seq) DO NOTHING RETURNING id)"
        )
    if events:
        rows = []
        for i, ev in enumerate(events):
            k = f"{e}{i}"
            rows.append(
                f"(:sid, :agent, :key{k}, :kind{k}, {number.format(f':step{k}')}, :actor{k}, "
                f":reason{k}, CAST(:payload{k} AS jsonb))"
            )
            params.update(
                {
                    f"key{k}": ev.key,
                    f"kind{k}": ev.kind,
                    f"step{k}": ev.step,
                    f"actor{k}": textcodec.plain(ev.actor) if ev.actor is not None else None,
                    f"reason{k}": (textcodec.plain(ev.reason) if ev.reason is not None else None),
                    f"payload{k}": _jsonb(ev.payload),
                }
            )
        parts.append(
            f"{e} AS ({_EVENT_INSERT} {rows_of(rows)} "
            "ON CONFLICT (session_id, key) DO NOTHING RETURNING id)"
        )
    return parts, params


async def append_record(
    db: Statements,
    session_id: str,
    agent_id: str,
    messages: list[NewMessage],
    events: list[NewEvent],
) -> tuple[int, int]:
    """Insert messages and events in one statement (one round trip, however many rows),
    each idempotent on its key as ``append_messages`` and ``record_events`` are: existing
    (session_id, seq) and (session_id, key) rows are kept. Returns (messages, events)
    inserted. Rows of a kind get their ids in the order given."""
    written, _ = await _append(db, session_id, agent_id, messages, events, guard=None)
    return written


async def append_record_until_ended(
    db: Statements,
    session_id: str,
    agent_id: str,
    messages: list[NewMessage],
    events: list[NewEvent],
    guard: EndGuard,
) -> tuple[tuple[int, int], str | None]:
    """``append_record``, written only while the guard's run has recorded no other end of
    the session (``EndGuard``): (messages, events) inserted, and the status of the other
    end that stopped the write (None: written)."""
    return await _append(db, session_id, agent_id, messages, events, guard=guard)


async def _append(
    db: Statements,
    session_id: str,
    agent_id: str,
    messages: list[NewMessage],
    events: list[NewEvent],
    *,
    guard: EndGuard | None,
) -> tuple[tuple[int, int], str | None]:
    if not messages and not events:
        return (0, 0), None
    if len(messages) > _ROWS_PER_STATEMENT or len(events) > _ROWS_PER_STATEMENT:
        # PostgreSQL takes at most 32,767 parameters in one statement.
        counts = [0, 0]
        for i in range(0, max(len(messages), len(events)), _ROWS_PER_STATEMENT):
            got, ended = await _append(
                db,
                session_id,
                agent_id,
                messages[i : i + _ROWS_PER_STATEMENT],
                events[i : i + _ROWS_PER_STATEMENT],
                guard=guard,
            )
            if ended is not None:
                return (counts[0], counts[1]), ended
            counts = [counts[0] + got[0], counts[1] + got[1]]
        return (counts[0], counts[1]), None
    other = _OTHER_END.format(sid=":sid")
    when = f"NOT EXISTS ({other})" if guard is not None else None
    parts, params = _record_parts(session_id, agent_id, messages, events, when=when)
    counted_m = "(SELECT count(*) FROM m)" if messages else "0"
    counted_e = "(SELECT count(*) FROM e)" if events else "0"
    ended = "NULL"
    if guard is not None:
        params.update(guard.params())
        ended = f"({other} LIMIT 1)"
    row = (
        await db.execute(
            sql(f"WITH {', '.join(parts)} SELECT {counted_m}, {counted_e}, {ended}"), params
        )
    ).one()
    return (int(row[0]), int(row[1])), (str(row[2]) if row[2] is not None else None)


async def append_reply(
    db: Statements,
    session_id: str,
    agent_id: str,
    message: NewMessage,
    event: NewEvent,
    *,
    tokens_in: int,
    tokens_out: int,
    cost_usd: float,
    step: int,
    answers: list[NewMessage] | None = None,
    answer_events: list[NewEvent] | None = None,
) -> tuple[bool, bool]:
    """A model reply, its event and the session's usage in one statement: the message and
    event as ``append_record`` writes them; the usage (tokens, cost) added only when the
    event is new, the step advanced either way. ``answers`` (tool results) and their
    ``answer_events`` are written only with a new reply: in the same statement, so the
    reply and these answers are in the record together or not at all. Whether the message
    and the event are new."""
    # The session's row is locked first (as ``u`` would lock it; rows that refer to it may
    # still be written meanwhile): an ending that closes a step still open
    # (``tools.folded.close_open_step``) locks it first too, so the two never interleave:
    # the ending reads what this wrote, or this finds the ending's rows in its place (the
    # call's event and usage are still written: the call was made).
    parts, params = _record_parts(
        session_id, agent_id, [message], [event], when="EXISTS (SELECT FROM l)"
    )
    parts.insert(0, f"l AS ({_LOCK_SESSION})")
    parts.append(
        "u AS (UPDATE sessions SET step = GREATEST(step, :ustep), updated_at = now(), "
        "tokens_in = tokens_in + CASE WHEN EXISTS (SELECT FROM e) "
        "THEN CAST(:ui AS bigint) ELSE 0 END, "
        "tokens_out = tokens_out + CASE WHEN EXISTS (SELECT FROM e) "
        "THEN CAST(:uo AS bigint) ELSE 0 END, "
        "cost_usd = cost_usd + CASE WHEN EXISTS (SELECT FROM e) "
        "THEN CAST(:uc AS numeric) ELSE 0 END "
        "WHERE id = :sid RETURNING 1)"
    )
    params.update({"ustep": step, "ui": tokens_in, "uo": tokens_out, "uc": cost_usd})
    # Read in this order so each message is written before its event (followers are told
    # of rows in the order they were written): the reply, its event, then the answers.
    counted = [f"(SELECT count(*) FROM {t}) AS {t}_count" for t in ("m", "e", "u")]
    if answers or answer_events:
        more, more_params = _record_parts(
            session_id,
            agent_id,
            answers or [],
            answer_events or [],
            names=("am", "ae"),
            when="EXISTS (SELECT FROM m)",
        )
        parts += more
        params.update(more_params)
        counted += [
            f"(SELECT count(*) FROM {name}) AS {name}_count"
            for name, rows in (("am", answers), ("ae", answer_events))
            if rows
        ]
    row = await one_row(db, sql(f"WITH {', '.join(parts)} SELECT {', '.join(counted)}"), params)
    return int(row["m_count"]) > 0, int(row["e_count"]) > 0


_MESSAGE_COLUMNS = (
    "session_id, seq, role, content, content_enc, step, name, tool_calls, tool_call_id, created_at"
)


def _message(row: Any) -> StoredMessage:
    return StoredMessage(
        session_id=row["session_id"],
        seq=row["seq"],
        role=row["role"],
        content=textcodec.decode(row["content"], row["content_enc"]),
        step=row["step"],
        name=row["name"],
        tool_calls=from_jsonb(row["tool_calls"]),
        tool_call_id=row["tool_call_id"],
        created_at=row["created_at"],
    )


def _message_json(row: dict[str, Any]) -> StoredMessage:
    """A message read as JSON (``row_to_json`` of the columns the reads here take)."""
    return _message({**row, "created_at": _at(row["created_at"])})


async def recent_messages(db: Statements, session_id: str, limit: int) -> list[StoredMessage]:
    """The last ``limit`` messages, oldest first."""
    rows = (
        await db.execute(
            sql(
                f"SELECT {_MESSAGE_COLUMNS} FROM (SELECT * FROM messages WHERE session_id = :sid "
                "ORDER BY seq DESC LIMIT :lim) m ORDER BY seq"
            ),
            {"sid": session_id, "lim": limit},
        )
    ).mappings()
    return [_message(r) for r in rows]


async def messages_page(
    db: Statements, session_id: str, *, after_seq: int = -1, limit: int = 100
) -> list[StoredMessage]:
    """Messages with seq > after_seq, oldest first: page through a transcript of any length."""
    rows = (
        await db.execute(
            sql(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = :sid AND seq > :after "
                "ORDER BY seq LIMIT :lim"
            ),
            {"sid": session_id, "after": after_seq, "lim": limit},
        )
    ).mappings()
    return [_message(r) for r in rows]


async def lock_session(db: Statements, session_id: str) -> None:
    """Lock the session's row for the rest of the transaction, as an update of it would
    (``FOR NO KEY UPDATE``: rows that refer to the session may still be written meanwhile;
    see ``append_reply``)."""
    await db.execute(sql(_LOCK_SESSION), {"sid": session_id})


_LOCK_SESSION = "SELECT 1 FROM sessions WHERE id = :sid FOR NO KEY UPDATE"
"""The session's row locked as an update of it locks it (``lock_session``, ``append_reply``)."""


async def messages_by_seq(db: Statements, session_id: str, seqs: list[int]) -> list[StoredMessage]:
    rows = (
        await db.execute(
            sql(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = :sid "
                "AND seq = ANY(:seqs) ORDER BY seq"
            ),
            {"sid": session_id, "seqs": seqs},
        )
    ).mappings()
    return [_message(r) for r in rows]


async def record_events(
    db: Statements, session_id: str, agent_id: str, events: list[NewEvent]
) -> int:
    """Insert events on their key; existing (session_id, key) rows are kept. Returns inserts."""
    _, inserted = await append_record(db, session_id, agent_id, [], events)
    return inserted


@dataclass(frozen=True)
class StoredEvent:
    key: str
    kind: str
    step: int
    actor: str | None
    reason: str | None
    payload: dict[str, Any]
    created_at: datetime

    @property
    def at(self) -> datetime:
        """When it was done: a queued human action's own time, else the write time."""
        return action_at(self.payload, self.created_at)


async def list_events(
    db: DbSession, session_id: str, *, kind: str | None = None
) -> list[StoredEvent]:
    rows = (
        await db.execute(
            sql(
                "SELECT key, kind, step, actor, reason, payload, created_at FROM events "
                "WHERE session_id = :sid "
                "AND (CAST(:kinds AS text[]) IS NULL OR kind = ANY(CAST(:kinds AS text[]))) "
                "ORDER BY id"
            ),
            {"sid": session_id, "kinds": None if kind is None else event_kinds.stored_as(kind)},
        )
    ).mappings()
    return [_event(r) for r in rows]


async def events_page(
    db: DbSession,
    session_id: str,
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
    skip_kinds: tuple[str, ...] = (),
) -> list[tuple[tuple[datetime, int], StoredEvent]]:
    """One page of a session's events in the order they were done (for exports): by their
    action's own time (``vigil_action_at``), then by id. Each comes with its place in
    that order; ``after`` is the place of the previous page's last event."""
    at, last = after if after is not None else (None, 0)
    rows = (
        await db.execute(
            sql(
                "SELECT id, vigil_action_at(payload, created_at) AS at, "
                "key, kind, step, actor, reason, payload, created_at FROM events "
                "WHERE session_id = :sid AND NOT (kind = ANY(CAST(:skip AS text[]))) "
                "AND (CAST(:at AS timestamptz) IS NULL OR "
                "(vigil_action_at(payload, created_at), id) > (CAST(:at AS timestamptz), :id)) "
                "ORDER BY vigil_action_at(payload, created_at), id LIMIT :lim"
            ),
            {"sid": session_id, "skip": list(skip_kinds), "at": at, "id": last, "lim": limit},
        )
    ).mappings()
    return [((r["at"], int(r["id"])), _event(r)) for r in rows]


def _event(r: Any) -> StoredEvent:
    return StoredEvent(
        key=r["key"],
        kind=event_kinds.canonical(r["kind"]),  # rows written under a name since renamed
        step=r["step"],
        actor=r["actor"],
        reason=r["reason"],
        payload=from_jsonb(r["payload"]) or {},
        created_at=r["created_at"],
    )


def _event_json(row: dict[str, Any]) -> StoredEvent:
    """An event read as JSON (``row_to_json`` of the columns the reads here take)."""
    return _event({**row, "created_at": _at(row["created_at"])})


async def get_event(db: Statements, session_id: str, key: str) -> StoredEvent | None:
    """One event by its idempotency key (the unique index answers it)."""
    row = (
        (
            await db.execute(
                sql(
                    "SELECT key, kind, step, actor, reason, payload, created_at FROM events "
                    "WHERE session_id = :sid AND key = :key"
                ),
                {"sid": session_id, "key": key},
            )
        )
        .mappings()
        .first()
    )
    return _event(row) if row is not None else None


_CONTEXT_READ = sql(
    "SELECT session_row, reply_written, newest_summary_key, newest_summary, new_messages, "
    "artifact_refs, live_ids, recall_blocked FROM vigil_context_read(CAST(:sid AS text), "
    "CAST(:reply_seq AS integer), CAST(:kinds AS text[]), CAST(:held AS text), "
    "CAST(:after AS integer), CAST(:gaps AS integer[]), CAST(:recent AS integer), "
    "CAST(:artifacts AS boolean), CAST(:ids AS bigint[]), CAST(:lock_ms AS integer))"
)


@dataclass(frozen=True)
class ContextRows:
    """A model call's read of the record (``context_rows``), as rows."""

    session: SessionRow | None
    """None: erased, or never was (then nothing else was read)."""
    reply_written: bool
    summary_key: str | None
    """The key of the newest summary event."""
    summary: StoredEvent | None
    """That event, when its key is not the one the caller holds."""
    messages: list[StoredMessage]
    artifacts: list[dict[str, Any]] | None
    """The session's artifact references as JSON rows (``artifacts.registry.ref_from_json``
    reads them); None when not asked for."""
    live_ids: set[int] | None
    """Which of the memories asked about are still live (None: not asked, or blocked)."""
    recall_blocked: bool
    """That check waited on a lock past its bound (or had no time left) and was given up."""


async def context_rows(
    db: Statements,
    session_id: str,
    *,
    reply_seq: int,
    summary_kind: str,
    held_summary: str | None,
    after_seq: int | None,
    gaps: list[int],
    recent: int,
    with_artifacts: bool,
    memory_ids: list[int] | None,
    lock_ms: int | None,
) -> ContextRows:
    """The record's part of a model call's context in one statement (``vigil_context_read``,
    migration 20261202_18, run as the caller: ``db`` acts for the agent): the session,
    whether message ``reply_seq`` is written, the newest ``summary_kind`` event's key (and
    the event when its key is not ``held_summary``), the messages after ``after_seq`` or at
    ``gaps`` (the newest ``recent`` when ``after_seq`` is None), the artifacts, and which of
    ``memory_ids`` are live, that check waiting on a lock at most ``lock_ms`` from the
    statement's start (None: unbounded)."""
    row = await one_row(
        db,
        _CONTEXT_READ,
        {
            "sid": session_id,
            "reply_seq": reply_seq,
            "kinds": event_kinds.stored_as(summary_kind),
            "held": held_summary,
            "after": after_seq,
            "gaps": gaps,
            "recent": recent,
            "artifacts": with_artifacts,
            "ids": memory_ids,
            "lock_ms": lock_ms,
        },
    )
    session = row["session_row"]
    summary = row["newest_summary"]
    live = row["live_ids"]
    return ContextRows(
        session=_session_json(session) if session is not None else None,
        reply_written=bool(row["reply_written"]),
        summary_key=row["newest_summary_key"],
        summary=_event_json(summary) if summary is not None else None,
        messages=[_message_json(m) for m in row["new_messages"] or []],
        artifacts=row["artifact_refs"],
        live_ids=set(live) if live is not None else None,
        recall_blocked=bool(row["recall_blocked"]),
    )
