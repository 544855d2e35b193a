"""Context assembly for one model call, packed into a token budget.

What the model sees: the system prompt; one vigil note with the session's goal (once the
message that states it has left the window), the running summary of older turns, recalled
memories and the session's artifact references; then the most recent messages that fit.
Older turns are summarised rather than dropped, and each summary is kept (an ``events``
row of kind ``context_summary``), so the next call extends it instead of starting over.
Token counts come from an offline estimator, so no tokenizer download is needed.
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
from vigil.activities.artifacts.registry import ref_from_json
from vigil.activities.context_cache import MAX_GAPS, ContextCache, SessionWindow, missing_seqs
from vigil.activities.memory.provenance import EmbedderMismatch
from vigil.activities.memory.store import live_memories_bounded
from vigil.activities.models.base import ChatMessage, ToolCall
from vigil.activities.record import store as record
from vigil.activities.record.lean import Statements, engine_of
from vigil.activities.record.rls import bound_acting_for
from vigil.schema import event_kinds, textcodec
from vigil.schema.payloads import preview

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
    goal_share: float = 0.2
    """The most of the budget the session's goal takes once its own message has left the
    window (a longer goal keeps its beginning and its end)."""


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


NAMED_CHARS = 80
"""A call's name and id where the context names them (a model may send megabytes)."""
SUMMARY_LINE_CHARS = 160
"""A summarised message's words, and its calls, in its line of the summary."""


def summarise(previous: str | None, older: list[record.StoredMessage], limit_tokens: int) -> str:
    """Extractive running summary: the previous one plus one line per older message."""
    lines = [previous] if previous else []
    for m in older:
        # Names bounded as the words are: a model may send a name of megabytes, and the
        # newest line stays whatever its size.
        who = m.role if not m.name else f"{m.role}:{preview(m.name, NAMED_CHARS)}"
        head = " ".join(m.content.split())[:SUMMARY_LINE_CHARS]
        calls = preview(
            ", ".join(f"{preview(str(c['name']), NAMED_CHARS)}(...)" for c in (m.tool_calls or [])),
            SUMMARY_LINE_CHARS,
        )
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


GOAL_HEADING = "The session's goal:"


def pinned_goal(goal: str, limit_tokens: int) -> str:
    """The goal as the context carries it once its message has left the window: whole
    when it fits ``limit_tokens``, else its beginning (two thirds of the room) and its end
    around a line that says how much was left out."""
    if count_tokens(goal) <= limit_tokens:
        return goal
    # Characters per token of this goal, so the cut lands near the limit in one pass.
    keep = max(2, int(len(goal) * limit_tokens / max(1, count_tokens(goal))) - 60)
    head, tail = goal[: keep * 2 // 3], goal[len(goal) - keep // 3 :]
    left_out = len(goal) - len(head) - len(tail)
    cut = f"{head}\n[... {left_out} characters of the goal left out ...]\n{tail}"
    return goal if len(cut) >= len(goal) else cut  # a goal shorter than its cut: whole


def _states_goal(goal: str, taken: list[record.StoredMessage]) -> bool:
    """Whether the window sends a message that states the goal (the first message, or a
    redirect's), so the goal need not be pinned beside it."""
    # The row keeps the goal as ``textcodec.plain`` writes it (a NUL shown as U+2400).
    return any(m.role == "user" and goal in textcodec.plain(m.content) for m in taken)


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
    and whether a kept recall result still stands (checked by the same read)."""

    session: record.SessionRow | None
    window: SessionWindow
    artifacts: list[Any]
    warm: bool
    seconds: float
    """How long the read took (it counts against the context time budget)."""
    recall_checked: bool = False
    """A kept recall result was checked against the record in the read."""
    recall_blocked: bool = False
    """That check waited on a lock past the time budget and was given up: no other
    check of it is sent (it would queue behind the same lock)."""
    recalled: list[Any] | None = None
    """That result, when every memory in it is still live (None: none kept, or not)."""
    recall_for: tuple[str, tuple[str, ...]] | None = None
    """The recall query and its cache key, when the read worked them out (``assemble``
    uses them rather than working them out again)."""
    has_reply: bool = False
    """A message is recorded at the ``reply_seq`` the read was asked about (a model call
    that finds its reply written already returns it and calls nothing)."""


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
    """The record's part of a context, read acting for ``agent_id`` (``db`` acts for it):
    the session row, whether a message is recorded at ``reply_seq`` already
    (``has_reply``: the model call's check for a written reply rides with the read), then
    either the whole recent window or only what was written since the kept one (by seq,
    so messages written by any worker or process are seen), the running summary, the
    artifacts and whether a kept recall result for this turn's query still holds only
    live memories.

    One statement (``vigil_context_read``, migration 20261202_18) as a rule; a second only
    when the kept window turns out to belong to an erased session of the same id, or
    when this turn's recall query is not the one the kept window last recalled for (a
    human's new words, a new goal). The recall check waits on a lock no longer than what
    remains of the time budget, bounded by PostgreSQL: past it the read stands without
    the check (``recall_blocked``), and ``assemble`` recalls within what is left, as when
    a recall does not answer in time.
    """
    started = time.perf_counter()
    max_recent = budget.max_recent
    kept = cache.window(session_id) if cache is not None else None
    if kept is not None and (
        kept.agent_id != agent_id or kept.max_recent != max_recent or len(kept.gaps) > MAX_GAPS
    ):
        assert cache is not None
        cache.drop(session_id)
        kept = None
    # The recall this session's window last used: most steps recall for the same text
    # (the goal and the newest human words), so its kept result is checked in the read.
    guessed = (
        cache.recalled(kept.recall_key)
        if cache is not None and kept is not None and kept.recall_key is not None
        else None
    )

    def left_ms() -> float | None:
        """What remains of the time budget (None: no budget)."""
        if time_budget_ms is None:
            return None
        return time_budget_ms - (time.perf_counter() - started) * 1000

    def lock_ms() -> int | None:
        left = left_ms()
        return None if left is None else max(1, int(left))

    async def rows(window: SessionWindow | None) -> record.ContextRows:
        return await record.context_rows(
            db,
            session_id,
            reply_seq=reply_seq,
            summary_kind=event_kinds.CONTEXT_SUMMARY,
            held_summary=window.summary_key if window is not None else None,
            after_seq=window.last_seq if window is not None else None,
            gaps=sorted(window.gaps) if window is not None else [],
            recent=max_recent,
            with_artifacts=artifacts is None,
            memory_ids=[m.id for m in guessed] if guessed else None,
            lock_ms=lock_ms(),
        )

    got_rows = await rows(kept)
    session = got_rows.session
    if kept is not None and (session is None or kept.created_at != session.created_at):
        assert cache is not None
        cache.drop(session_id)  # erased (and maybe started again under the same id)
        kept = None
        if session is not None:
            got_rows = await rows(None)
    warm = kept is not None
    if session is None:
        window = SessionWindow(
            agent_id=agent_id, created_at=_EPOCH, max_recent=max_recent, recent=[],
            last_seq=-1, gaps=set(),
        )  # fmt: skip
    else:
        new = got_rows.messages
        if kept is not None:
            kept.merge(new)
            window = kept
        else:
            last_seq = new[-1].seq if new else -1
            window = SessionWindow(
                agent_id=agent_id,
                created_at=session.created_at,
                max_recent=max_recent,
                recent=new,
                last_seq=last_seq,
                gaps=missing_seqs(new, max_recent, last_seq),
            )
        # Summaries are only ever written further along, so the newest extends all others.
        key = got_rows.summary_key
        if key != window.summary_key:
            last = got_rows.summary
            payload = last.payload if last is not None else None
            window.summary_key = key
            window.summary_text = str(payload.get("text", "")) if payload is not None else None
            window.summary_upto = int(payload.get("upto_seq", -1)) if payload is not None else None
    if artifacts is None:
        artifacts = [ref_from_json(a) for a in got_rows.artifacts or []]
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
        has_reply=got_rows.reply_written,
    )
    if memory is None or cache is None or not window.recent:
        return got
    query = recall_query(session, window.recent)
    if not query.strip():
        return got
    recall_key = cache.recall_key(agent_id, repr(memory.embedder), budget.recall_k, query)
    got.recall_for = (query, recall_key)
    window.recall_key = recall_key
    found = cache.recalled(recall_key)
    if found is None:
        return got
    ids = [m.id for m in found]
    if not ids:
        got.recall_checked, got.recalled = True, found
        return got
    if got_rows.recall_blocked:
        # Whichever result it was checking: a check sent now would queue behind the
        # same lock (or there is no time left for one).
        got.recall_blocked = True
        return got  # assemble goes on without the check
    if found is guessed and got_rows.live_ids is not None:
        live = got_rows.live_ids
    else:
        left = left_ms()
        if left is not None and left <= 0:
            return got  # assemble goes on without recall
        checked = await live_memories_bounded(db, ids, lock_ms())
        if checked is None:
            got.recall_blocked = True
            got.seconds = time.perf_counter() - started
            return got
        live = checked
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
    try:
        if cache is None or key is None:
            return list(await memory.recall(agent_id, query, k=k))
        # Checked already, or given up behind a lock (a check sent now would queue behind
        # it, and one cancelled by the budget would leave its backend queued there).
        found = None if read.recall_checked or read.recall_blocked else cache.recalled(key)
        if found is not None:
            ids = [m.id for m in found]
            # A memory forgotten, superseded or erased since is never sent: checked each
            # time.
            if not ids or set(ids) <= await memory.live_ids(agent_id, ids):
                cache.stats["recall_hit"] += 1
                return found
        cache.stats["recall_miss"] += 1
        # Shielded: a step that stops waiting leaves it running, and its result is kept.
        return await asyncio.shield(cache.recall_task(key, memory, agent_id, query, k))
    except EmbedderMismatch:
        # The agent's memories come from another embedder than this worker's (a reindex
        # rolled out agent by agent): no vector is compared across two spaces, and
        # full-text recall goes on, within the same time budget.
        return list(await memory.recall(agent_id, query, k=k, mode="text"))


WARM_UP_AGENT = "vigil:warm-up"
"""The agent the start-up warm-up reads as (``warm_up``): no agent is called so, and its
role sees no other agent's rows, so the warm-up reads nothing and writes nothing."""


async def warm_up(
    sessionmaker: async_sessionmaker[DbSession],
    *,
    memory: Any | None,
    budget: ContextBudget,
    connections: int = 2,
    rounds: int = 3,
) -> None:
    """Run what a step's context costs once per worker or per connection, before the
    worker polls, so that no step's time budget pays for it.

    On a fresh worker the first steps were slower than the rest (the first recall 40-75 ms,
    3-9 ms once warm; step 1 past the 50 ms budget, recall dropped): each new pooled
    connection is a new PostgreSQL backend, and the first statements on it load the
    vector type's library, the text search dictionary, the search function and the
    tables' metadata, and prepare each statement (5-20 ms apiece); a local embedder loads
    its model at its first use (its first embedding 75 ms, later ones 12-22 ms). Here the
    context's read and a recall run for ``WARM_UP_AGENT`` on ``connections`` connections
    of each pool at once (a recall takes two: its halves run side by side), ``rounds``
    times, so the connections a step takes are open and have run its statements."""
    engine = engine_of(sessionmaker)

    async def step() -> None:
        async with bound_acting_for(engine, WARM_UP_AGENT) as db:
            await read_context(
                db,
                session_id=WARM_UP_AGENT,
                agent_id=WARM_UP_AGENT,
                budget=budget,
                time_budget_ms=1000.0,  # the read as a budgeted step sends it
            )
        if memory is not None:
            await memory.recall(WARM_UP_AGENT, "warm up", k=budget.recall_k)

    for _ in range(rounds):
        await asyncio.gather(*(step() for _ in range(connections)))


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

    Everything is read and written acting for ``agent_id`` (row-level security): one
    statement before recall and, when older turns fall out of the window, a summary event
    after it (on a connection kept in the agent's role: a round trip each).
    ``artifacts`` given are used as they are; otherwise the session's are read.

    With a ``cache``, only what the record gained since the kept window is read, and a
    recall for the same text is not run again; the result is the same as without it.
    With a ``time_budget_ms``, a recall that does not answer within what remains of it is
    not waited for: the step goes on with the recent messages and the running summary,
    and (given its ``step``) a ``context_degraded`` event says so.

    ``read``: the record's part already read (``read_context``) by the caller, with the
    same arguments; its time counts against the time budget.
    """
    started = time.perf_counter()
    engine = engine_of(sessionmaker)
    if read is None:
        async with bound_acting_for(engine, agent_id) as db:
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
            elif cache is not None and key is not None and got.recalled is not None:
                # Checked live by the read: nothing to wait for (no task to time out).
                with metrics.timed(metrics.RECALL_SECONDS, agent_id):
                    cache.stats["recall_hit"] += 1
                    found = got.recalled
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

    # The recent window (``_window``) in what the rest leaves of the budget.
    reserve = int(budget.total_tokens * budget.summary_share)
    note_estimate = sum(count_tokens(x) for x in memory_lines + artifact_lines) + 20
    room = budget.total_tokens - used - reserve - note_estimate
    chats = window.chats
    for m in recent:
        if m.seq not in chats:
            chat = _to_chat(m)
            chats[m.seq] = (chat, message_tokens(chat))
    upto = window.summary_upto if window.summary_upto is not None else -1
    taken = _window(recent, chats, room, budget, upto)
    # The goal stays in front of the model once the message that states it has left the
    # window (it would otherwise live on as the summary's first words only).
    goal = session.goal if session is not None else ""
    goal_text: str | None = None
    if goal.strip() and taken and taken[0].seq > 0 and not _states_goal(goal, taken):
        goal_text = pinned_goal(goal, int(budget.total_tokens * budget.goal_share))
        room -= count_tokens(goal_text) + count_tokens(GOAL_HEADING) + 2
        taken = _window(recent, chats, room, budget, upto)
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
            async with bound_acting_for(engine, agent_id) as db:
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
        async with bound_acting_for(engine, agent_id) as db:
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
    if goal_text is not None:
        note_parts.append(f"{GOAL_HEADING}\n{goal_text}")
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
    if taken and taken[0].role == "tool":
        # Only results are left of the window (their call was too long to be sent): a
        # provider refuses a tool result without its call, so they are told as text.
        messages.append(_results_as_text([chats[m.seq][0] for m in taken]))
        tokens = sum(message_tokens(m) for m in messages)
    else:
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


def _window(
    recent: list[record.StoredMessage],
    chats: dict[int, tuple[ChatMessage, int]],
    room: int,
    budget: ContextBudget,
    upto: int,
) -> list[record.StoredMessage]:
    """The recent window: every turn the summary (up to ``upto``) does not hold yet, while
    they fit; when they no longer do, the newest that fit in (1 - slack) of the room and
    of the count, and the rest joins the summary. The slack makes the summary (and so the
    start of what the model is sent) change every few steps rather than on every step."""
    pending = [m for m in recent if m.seq > upto]
    taken = _newest_that_fit(pending, chats, room, len(pending))
    if not (recent and recent[0].seq <= upto + 1 and len(taken) == len(pending)):
        keep = 1.0 - budget.slack
        taken = _newest_that_fit(
            recent, chats, int(room * keep), max(1, int(budget.max_recent * keep))
        )
    return taken


def _newest_that_fit(
    msgs: list[record.StoredMessage],
    chats: dict[int, tuple[ChatMessage, int]],
    room: int,
    limit: int,
) -> list[record.StoredMessage]:
    """The newest of ``msgs`` within ``room`` tokens and ``limit`` messages (the newest
    always), not beginning inside a tool exchange (a tool result without its call) unless
    only such results are left: then all of those that fit."""
    taken: list[record.StoredMessage] = []
    for m in reversed(msgs):
        cost = chats[m.seq][1]
        if taken and (room - cost < 0 or len(taken) >= limit):
            break
        taken.append(m)
        room -= cost
    taken.reverse()
    first = next((i for i, m in enumerate(taken) if m.role != "tool"), None)
    return taken if first is None else taken[first:]


def _results_as_text(results: list[ChatMessage]) -> ChatMessage:
    """Tool results whose call is not sent (it is in the summary), as one user message
    that says what they are."""
    parts = [
        f"[The result of your call {preview(r.name or 'of a tool', NAMED_CHARS)} (id "
        f"{preview(r.tool_call_id or '', NAMED_CHARS)}), whose request is summarised "
        f"above:]\n{r.content}"
        for r in results
    ]
    return ChatMessage(role="user", content="\n\n".join(parts))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
