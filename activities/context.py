"""Context assembly for one model call, packed into a token budget.

What the model sees: the system prompt; one vigil note with the running summary of older
turns, recalled memories and the session's artifact references; then the most recent
messages that fit. Older turns are summarised rather than dropped, and each summary is
kept (an ``events`` row of kind ``context_summary``), so the next call extends it instead
of starting over. Token counts come from an offline estimator, so no tokenizer download
is needed.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities import metrics
from vigil.activities.artifacts.registry import session_artifacts
from vigil.activities.context_cache import MAX_GAPS, ContextCache, SessionWindow, missing_seqs
from vigil.activities.memory.store import live_memory_ids
from vigil.activities.models.base import ChatMessage, ToolCall
from vigil.activities.record import store as record
from vigil.activities.record.lean import Statements
from vigil.activities.record.rls import acting_for, bound_lock_waits
from vigil.schema import event_kinds

Role = Literal["system", "user", "assistant", "tool"]
_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)
DEFAULT_SYSTEM = (
    "You are a careful autonomous agent run by vigil. Work towards the goal with the tools "
    "you have; call `finish` with a summary when the goal is met."
)


COUNTED_TEXTS = 512
"""Texts whose token count is kept: the parts of a context sent again every step (system
prompt, summary, memory and artifact lines) are counted once, not on every step."""
COUNTED_MAX_CHARS = 16 * 1024
"""Longer texts are counted every time (the kept counts hold at most 8 M characters)."""


def count_tokens(text: str) -> int:
    """Offline estimate of BPE tokens: a word or punctuation mark each, long words per 6 chars."""
    if len(text) > COUNTED_MAX_CHARS:
        return _count_tokens(text)
    return _kept_count(text)


def _count_tokens(text: str) -> int:
    total = 0
    for piece in _PIECES.findall(text):
        total += 1 + (len(piece) - 1) // 6 if piece[0].isalnum() else 1
    return total + text.count("\n") // 2


_kept_count = functools.lru_cache(maxsize=COUNTED_TEXTS)(_count_tokens)


def message_tokens(msg: ChatMessage) -> int:
    calls = sum(count_tokens(c.name) + count_tokens(c.arguments) + 4 for c in msg.tool_calls)
    return count_tokens(msg.content) + calls + 4


@dataclass
class ContextBudget:
    total_tokens: int = 8000
    """Everything the model is sent (excluding tool definitions)."""
    memory_share: float = 0.15
    summary_share: float = 0.15
    max_recent: int = 200
    recall_k: int = 5
    slack: float = 0.25
    """Share of the window's room (and count) left free when older turns are summarised."""


@dataclass
class Assembled:
    messages: list[ChatMessage]
    tokens: int
    recent_from_seq: int | None
    summary_upto_seq: int | None
    memories: int
    artifacts: int
    dropped_for_budget: int = 0
    notes: list[str] = field(default_factory=list)
    degraded: Degraded | None = None
    """Set when the time budget ran out and the context went without some part."""
    cache: Literal["warm", "cold"] | None = None
    """Whether the worker's kept window was used (None: assembled without a cache)."""


@dataclass(frozen=True)
class Degraded:
    """What a step went without because context assembly ran past its time budget."""

    stage: Literal["recall", "assembly"]
    """``recall``: the recall did not answer in time; ``assembly``: the record's reads
    had used the budget before recall could start."""
    elapsed_ms: float
    budget_ms: float

    def as_payload(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "budget_ms": self.budget_ms,
        }


def summarise(previous: str | None, older: list[record.StoredMessage], limit_tokens: int) -> str:
    """Extractive running summary: the previous one plus one line per older message."""
    lines = [previous] if previous else []
    for m in older:
        who = m.role if not m.name else f"{m.role}:{m.name}"
        head = " ".join(m.content.split())[:160]
        calls = ", ".join(f"{c['name']}(...)" for c in (m.tool_calls or []))
        text = head or calls or "(empty)"
        if calls and head:
            text = f"{head} [calls {calls}]"
        lines.append(f"- #{m.seq} {who}: {text}")
    # Keep the newest lines when over budget: the start is already folded into older
    # summaries. Counted per line, so trimming a long backlog stays linear.
    costs = [count_tokens(line) + 1 for line in lines]
    total = sum(costs)
    start = 0
    while total > limit_tokens and start < len(lines) - 1:
        total -= costs[start]
        start += 1
    return "\n".join(lines[start:])


def _to_chat(m: record.StoredMessage) -> ChatMessage:
    calls = [
        ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"]) for c in (m.tool_calls or [])
    ]
    role: Role = m.role if m.role in ("system", "assistant", "tool") else "user"  # type: ignore[assignment]
    return ChatMessage(
        role=role,
        content=m.content,
        tool_calls=calls,
        tool_call_id=m.tool_call_id,
        name=m.name,
    )


@dataclass
class ContextRead:
    """What the record holds for the next turn, as read (whole, or since the kept window),
    and whether a kept recall result still stands (checked in the same transaction)."""

    session: record.SessionRow | None
    window: SessionWindow
    artifacts: list[Any]
    warm: bool
    seconds: float
    """How long the read took (it counts against the context time budget)."""
    recall_checked: bool = False
    """A kept recall result was checked against the record in the read."""
    recalled: list[Any] | None = None
    """That result, when every memory in it is still live (None: none kept, or not)."""
    recall_for: tuple[str, tuple[str, ...]] | None = None
    """The recall query and its cache key, when the read worked them out (``assemble``
    uses them rather than working them out again)."""
    has_reply: bool = False
    """A message is recorded at the ``reply_seq`` the read was asked about (a model call
    that finds its reply written already returns it and calls nothing)."""


class RecallCheckBlocked(Exception):
    """The check of a kept recall result waited on a lock past the context time budget:
    the transaction is aborted (the caller rolls it back by letting this pass out of it);
    ``read`` holds everything read before, which stands."""

    def __init__(self, read: ContextRead) -> None:
        super().__init__("the kept recall's check waited on a lock past the time budget")
        self.read = read


_LOCK_NOT_AVAILABLE = "55P03"


async def _read_cold(
    db: Statements, session_id: str, agent_id: str, max_recent: int, marks: record.SessionMarks
) -> tuple[record.SessionRow | None, SessionWindow]:
    session = marks.session
    recent = await record.recent_messages(db, session_id, max_recent)
    # Summaries are only ever written further along, so the newest extends all others.
    last = (
        await record.latest_event(db, session_id, event_kinds.CONTEXT_SUMMARY)
        if marks.latest_key is not None
        else None
    )
    last_seq = recent[-1].seq if recent else -1
    window = SessionWindow(
        agent_id=agent_id,
        created_at=session.created_at if session else _EPOCH,
        max_recent=max_recent,
        recent=recent,
        last_seq=last_seq,
        gaps=missing_seqs(recent, max_recent, last_seq),
    )
    if last is not None:
        window.summary_key = last.key
        window.summary_text = str(last.payload.get("text", ""))
        window.summary_upto = int(last.payload.get("upto_seq", -1))
    return session, window


async def read_context(
    db: Statements,
    *,
    session_id: str,
    agent_id: str,
    budget: ContextBudget,
    memory: Any | None = None,
    cache: ContextCache | None = None,
    artifacts: list[Any] | None = None,
    time_budget_ms: float | None = None,
    reply_seq: int = -1,
) -> ContextRead:
    """The record's part of a context, read in ``db``'s transaction (already acting for
    ``agent_id``): the session row, then either the whole recent window or only what was
    written since the kept one (by seq, so messages written by any worker or process are
    seen), the running summary, the artifacts and, last, whether a kept recall result for
    this turn's query still holds only live memories.

    The first statement also tells whether a message is recorded at ``reply_seq``
    (``has_reply``): the model call's check for an already written reply rides with the
    read. Within a time budget, the recall check waits
    on a lock no longer than what remains of it, and raises ``RecallCheckBlocked`` (the
    read is in it) when it would wait longer: ``assemble`` then goes on as when a recall
    does not answer in time.
    """
    started = time.perf_counter()
    max_recent = budget.max_recent
    kept = cache.window(session_id) if cache is not None else None
    warm = False
    # The session, the summary's key and whether the reply is written: one round trip.
    marks = await record.session_marks(
        db, session_id, seq=reply_seq, kind=event_kinds.CONTEXT_SUMMARY
    )
    session = marks.session
    if kept is not None:
        if (
            session is not None
            and kept.agent_id == agent_id
            and kept.created_at == session.created_at
            and kept.max_recent == max_recent
            and len(kept.gaps) <= MAX_GAPS
        ):
            new = await record.messages_since(
                db, session_id, after_seq=kept.last_seq, also=sorted(kept.gaps)
            )
            kept.merge(new)
            key = marks.latest_key
            if key != kept.summary_key:
                # A summary written elsewhere (another worker, or before a restart).
                last = await record.latest_event(db, session_id, event_kinds.CONTEXT_SUMMARY)
                kept.summary_key = last.key if last else None
                kept.summary_text = str(last.payload.get("text", "")) if last else None
                kept.summary_upto = int(last.payload.get("upto_seq", -1)) if last else None
            window, warm = kept, True
        else:
            assert cache is not None
            cache.drop(session_id)
    if not warm:
        session, window = await _read_cold(db, session_id, agent_id, max_recent, marks)
    if artifacts is None:
        artifacts = await session_artifacts(db, session_id)
    if cache is not None:
        if session is None:
            cache.drop(session_id)  # erased (or never was): nothing to keep
        else:
            cache.keep(session_id, window)
        cache.stats["window_hit" if warm else "window_miss"] += 1
    got = ContextRead(
        session=session,
        window=window,
        artifacts=artifacts,
        warm=warm,
        seconds=time.perf_counter() - started,
        has_reply=marks.has_seq,
    )
    if memory is None or cache is None or not window.recent:
        return got
    query = recall_query(session, window.recent)
    if not query.strip():
        return got
    recall_key = cache.recall_key(agent_id, repr(memory.embedder), budget.recall_k, query)
    got.recall_for = (query, recall_key)
    found = cache.recalled(recall_key)
    if found is None:
        return got
    ids = [m.id for m in found]
    if not ids:
        got.recall_checked, got.recalled = True, found
        return got
    if time_budget_ms is not None:
        remaining = time_budget_ms - (time.perf_counter() - started) * 1000
        if remaining <= 0:
            return got  # assemble goes on without recall
        # A plain read of memories waits only on a lock (DDL, LOCK TABLE): never longer
        # than the budget. The last statement of the read, so nothing else is bounded.
        await bound_lock_waits(db, remaining)
    try:
        live = await live_memory_ids(db, agent_id, ids)
    except Exception as exc:
        # SQLAlchemy's error carries the driver's in ``orig``; a lean transaction's is it.
        if getattr(getattr(exc, "orig", exc), "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        got.seconds = time.perf_counter() - started
        raise RecallCheckBlocked(got) from exc
    got.recall_checked = True
    got.recalled = found if set(ids) <= live else None
    got.seconds = time.perf_counter() - started
    return got


def recall_query(session: record.SessionRow | None, recent: list[record.StoredMessage]) -> str:
    """The text memories are recalled for: the goal and the newest human words.

    Not the agent's own latest words: they change every step, and recalling on them would
    re-run recall on every step. The agent searches its memory itself with the ``recall``
    tool; what is recalled for it unasked follows the task (a redirect or a human message
    changes it)."""
    human = [m.content for m in recent if m.role == "user" and m.content][-3:]
    return " ".join([session.goal if session else "", *human])[-2000:]


async def _recall_stage(
    memory: Any,
    cache: ContextCache | None,
    agent_id: str,
    query: str,
    k: int,
    read: ContextRead,
    key: tuple[str, ...] | None,
) -> list[Any]:
    if cache is None or key is None:
        return list(await memory.recall(agent_id, query, k=k))
    if read.recalled is not None:
        cache.stats["recall_hit"] += 1  # checked live by the read
        return read.recalled
    found = None if read.recall_checked else cache.recalled(key)
    if found is not None:
        ids = [m.id for m in found]
        # A memory forgotten, superseded or erased since is never sent: checked each time.
        if not ids or set(ids) <= await memory.live_ids(agent_id, ids):
            cache.stats["recall_hit"] += 1
            return found
    cache.stats["recall_miss"] += 1
    # Shielded: a step that stops waiting leaves it running, and its result is kept.
    return await asyncio.shield(cache.recall_task(key, memory, agent_id, query, k))


async def assemble(
    sessionmaker: async_sessionmaker[DbSession],
    *,
    session_id: str,
    agent_id: str,
    budget: ContextBudget,
    memory: Any | None = None,
    artifacts: list[Any] | None = None,
    cache: ContextCache | None = None,
    time_budget_ms: float | None = None,
    step: int | None = None,
    read: ContextRead | None = None,
) -> Assembled:
    """What the model is sent for the next turn of ``session_id``.

    Everything is read and written acting for ``agent_id`` (row-level security), in one
    transaction before recall and, when older turns fall out of the window, one after.
    ``artifacts`` given are used as they are; otherwise the session's are read.

    With a ``cache``, only what the record gained since the kept window is read, and a
    recall for the same text is not run again; the result is the same as without it.
    With a ``time_budget_ms``, a recall that does not answer within what remains of it is
    not waited for: the step goes on with the recent messages and the running summary,
    and (given its ``step``) a ``context_degraded`` event says so.

    ``read``: the record's part already read (``read_context``) in a transaction of the
    caller's, with the same arguments; its time counts against the time budget.
    """
    started = time.perf_counter()
    if read is None:
        try:
            async with acting_for(sessionmaker, agent_id) as db:
                read = await read_context(
                    db,
                    session_id=session_id,
                    agent_id=agent_id,
                    budget=budget,
                    memory=memory,
                    cache=cache,
                    artifacts=artifacts,
                    time_budget_ms=time_budget_ms,
                )
        except RecallCheckBlocked as blocked:
            read = blocked.read
    else:
        started -= read.seconds
    got = read
    session, window = got.session, got.window
    recent = window.recent
    system_text = (session.metadata.get("system_prompt") if session else None) or DEFAULT_SYSTEM
    system = ChatMessage(role="system", content=system_text)
    used = message_tokens(system)

    # Memories recalled for the task (goal + the newest human words).
    memory_lines: list[str] = []
    degraded: Degraded | None = None
    if memory is not None and recent:
        # With a cache, the read already worked out the query and its cache key.
        query, key = got.recall_for or (recall_query(session, recent), None)
        if query.strip():
            if cache is not None and key is None:
                key = cache.recall_key(agent_id, repr(memory.embedder), budget.recall_k, query)
            found: list[Any] = []
            remaining = (
                None
                if time_budget_ms is None
                else time_budget_ms / 1000 - (time.perf_counter() - started)
            )
            if remaining is not None and remaining <= 0:
                degraded = Degraded("assembly", _ms(started), time_budget_ms or 0.0)
                # Recalled meanwhile, for the next step.
                if cache is not None and key is not None and cache.recalled(key) is None:
                    cache.recall_task(key, memory, agent_id, query, budget.recall_k)
            else:
                try:
                    with metrics.timed(metrics.RECALL_SECONDS, agent_id):
                        found = await asyncio.wait_for(
                            _recall_stage(
                                memory, cache, agent_id, query, budget.recall_k, got, key
                            ),
                            timeout=remaining,
                        )
                except TimeoutError:
                    degraded = Degraded("recall", _ms(started), time_budget_ms or 0.0)
            memory_cap = int(budget.total_tokens * budget.memory_share)
            spent = 0
            for mem in found:
                line = f"- [{mem.kind}] {mem.content}"
                cost = count_tokens(line)
                if spent + cost > memory_cap:
                    break
                memory_lines.append(line)
                spent += cost
    artifact_lines = [
        f"- {a.name} ({a.size} bytes, sha256 {a.sha256[:12]}…)" for a in (got.artifacts or [])[:20]
    ]

    # The recent window: every turn the summary does not hold yet, while they fit; when
    # they no longer do, the newest that fit in (1 - slack) of the room and of the count,
    # and the rest joins the summary. The slack makes the summary (and so the start of
    # what the model is sent) change every few steps rather than on every step.
    reserve = int(budget.total_tokens * budget.summary_share)
    note_estimate = sum(count_tokens(x) for x in memory_lines + artifact_lines) + 20
    room = budget.total_tokens - used - reserve - note_estimate
    chats = window.chats
    for m in recent:
        if m.seq not in chats:
            chat = _to_chat(m)
            chats[m.seq] = (chat, message_tokens(chat))
    upto = window.summary_upto if window.summary_upto is not None else -1
    pending = [m for m in recent if m.seq > upto]
    taken = _newest_that_fit(pending, chats, room, len(pending))
    if not (recent and recent[0].seq <= upto + 1 and len(taken) == len(pending)):
        keep = 1.0 - budget.slack
        taken = _newest_that_fit(
            recent, chats, int(room * keep), max(1, int(budget.max_recent * keep))
        )
    start_seq = taken[0].seq if taken else None

    # Summarise what fell out of the window, extending the last kept summary.
    prev_text = window.summary_text
    prev_upto = window.summary_upto if window.summary_upto is not None else -1
    summary_text: str | None = prev_text
    summary_upto: int | None = window.summary_upto
    events: list[record.NewEvent] = []
    if degraded is not None and step is not None:
        events.append(
            record.NewEvent(
                key=f"context_degraded:{step}",
                kind=event_kinds.CONTEXT_DEGRADED,
                step=step,
                payload=degraded.as_payload(),
            )
        )
    older: list[record.StoredMessage] = []
    if start_seq is not None and start_seq - 1 > prev_upto:
        low = recent[0].seq if len(recent) >= window.max_recent else 0
        if prev_upto + 1 >= low:
            # The kept window holds all of them (it is current: read just now).
            older = [m for m in recent if prev_upto < m.seq < start_seq]
        else:
            async with acting_for(sessionmaker, agent_id) as db:
                older = await record.messages_page(
                    db, session_id, after_seq=prev_upto, limit=start_seq - 1 - prev_upto
                )
            older = [m for m in older if m.seq < start_seq]
    summary_key: str | None = None
    if older:
        summary_text = summarise(prev_text, older, reserve)
        summary_upto = older[-1].seq
        summary_key = f"summary:{summary_upto}"
        events.append(
            record.NewEvent(
                key=summary_key,
                kind=event_kinds.CONTEXT_SUMMARY,
                payload={"upto_seq": summary_upto, "text": summary_text},
            )
        )
    if events:
        async with acting_for(sessionmaker, agent_id) as db:
            inserted = await record.record_events(db, session_id, agent_id, events[-1:])
            if summary_key is not None and not inserted:
                # Written first by another worker: the record's text is the summary.
                kept = await record.get_event(db, session_id, summary_key)
                if kept is not None:
                    summary_text = str(kept.payload.get("text", ""))
            if len(events) > 1:
                await record.record_events(db, session_id, agent_id, events[:-1])
        if summary_key is not None:
            window.summary_key, window.summary_text = summary_key, summary_text
            window.summary_upto = summary_upto

    note_parts: list[str] = []
    if summary_text:
        note_parts.append(
            f"Summary of earlier turns (up to message #{summary_upto}):\n{summary_text}"
        )
    if memory_lines:
        note_parts.append("Relevant long-term memories:\n" + "\n".join(memory_lines))
    if artifact_lines:
        note_parts.append(
            "Artifacts of this session (read_artifact by name):\n" + "\n".join(artifact_lines)
        )
    messages = [system]
    if note_parts:
        messages.append(ChatMessage(role="system", content="\n\n".join(note_parts)))
    messages.extend(chats[m.seq][0] for m in taken)
    head = messages[: len(messages) - len(taken)]
    tokens = sum(message_tokens(m) for m in head) + sum(chats[m.seq][1] for m in taken)
    return Assembled(
        messages=messages,
        tokens=tokens,
        recent_from_seq=start_seq,
        summary_upto_seq=summary_upto,
        memories=len(memory_lines),
        artifacts=len(artifact_lines),
        dropped_for_budget=len(recent) - len(taken),
        degraded=degraded,
        cache=None if cache is None else ("warm" if got.warm else "cold"),
    )


def _newest_that_fit(
    msgs: list[record.StoredMessage],
    chats: dict[int, tuple[ChatMessage, int]],
    room: int,
    limit: int,
) -> list[record.StoredMessage]:
    """The newest of ``msgs`` within ``room`` tokens and ``limit`` messages (the newest
    always), not beginning inside a tool exchange (a tool result without its call)."""
    taken: list[record.StoredMessage] = []
    for m in reversed(msgs):
        cost = chats[m.seq][1]
        if taken and (room - cost < 0 or len(taken) >= limit):
            break
        taken.append(m)
        room -= cost
    taken.reverse()
    while len(taken) > 1 and taken[0].role == "tool":
        taken.pop(0)
    return taken


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
