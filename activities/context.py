"""Context assembly for one model call, packed into a token budget.

What the model sees: the system prompt; one vigil note with the running summary of older
turns, recalled memories and the session's artifact references; then the most recent
messages that fit. Older turns are summarised rather than dropped, and each summary is
kept (an ``events`` row of kind ``context_summary``), so the next call extends it instead
of starting over. Token counts come from an offline estimator, so no tokenizer download
is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities import metrics
from vigil.activities.artifacts.registry import session_artifacts
from vigil.activities.models.base import ChatMessage, ToolCall
from vigil.activities.record import store as record
from vigil.activities.record.rls import acting_for
from vigil.schema import event_kinds

Role = Literal["system", "user", "assistant", "tool"]
_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)
DEFAULT_SYSTEM = (
    "You are a careful autonomous agent run by vigil. Work towards the goal with the tools "
    "you have; call `finish` with a summary when the goal is met."
)


def count_tokens(text: str) -> int:
    """Offline estimate of BPE tokens: a word or punctuation mark each, long words per 6 chars."""
    total = 0
    for piece in _PIECES.findall(text):
        total += 1 + (len(piece) - 1) // 6 if piece[0].isalnum() else 1
    return total + text.count("\n") // 2


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


async def assemble(
    sessionmaker: async_sessionmaker[DbSession],
    *,
    session_id: str,
    agent_id: str,
    budget: ContextBudget,
    memory: Any | None = None,
    artifacts: list[Any] | None = None,
) -> Assembled:
    """What the model is sent for the next turn of ``session_id``.

    Everything is read and written acting for ``agent_id`` (row-level security), in one
    transaction before recall and, when older turns fall out of the window, one after.
    ``artifacts`` given are used as they are; otherwise the session's are read.
    """
    async with acting_for(sessionmaker, agent_id) as db:
        session = await record.get_session(db, session_id)
        recent = await record.recent_messages(db, session_id, budget.max_recent)
        # Summaries are only ever written further along, so the newest extends all others.
        last = await record.latest_event(db, session_id, "context_summary")
        if artifacts is None:
            artifacts = await session_artifacts(db, session_id)
    system_text = (session.metadata.get("system_prompt") if session else None) or DEFAULT_SYSTEM
    system = ChatMessage(role="system", content=system_text)
    used = message_tokens(system)

    # Memories recalled for the latest turn (goal + the newest human/assistant words).
    memory_lines: list[str] = []
    if memory is not None and recent:
        query_parts = [session.goal if session else ""] + [
            m.content for m in recent[-3:] if m.role in ("user", "assistant") and m.content
        ]
        query = " ".join(query_parts)[-2000:]
        if query.strip():
            with metrics.timed(metrics.RECALL_SECONDS, agent_id):
                found = await memory.recall(agent_id, query, k=budget.recall_k)
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
        f"- {a.name} ({a.size} bytes, sha256 {a.sha256[:12]}…)" for a in (artifacts or [])[:20]
    ]

    # Fill the recent window from the newest message backwards.
    reserve = int(budget.total_tokens * budget.summary_share)
    note_estimate = sum(count_tokens(x) for x in memory_lines + artifact_lines) + 20
    room = budget.total_tokens - used - reserve - note_estimate
    window: list[record.StoredMessage] = []
    for m in reversed(recent):
        cost = message_tokens(_to_chat(m))
        if window and room - cost < 0:
            break
        window.insert(0, m)
        room -= cost
    # A window must not begin inside a tool exchange (a tool result without its call).
    while len(window) > 1 and window[0].role == "tool":
        window.pop(0)
    start_seq = window[0].seq if window else None

    # Summarise what fell out of the window, extending the last kept summary.
    prev_text = str(last.payload.get("text", "")) if last else None
    prev_upto = int(last.payload.get("upto_seq", -1)) if last else -1
    summary_text: str | None = prev_text
    summary_upto: int | None = prev_upto if last else None
    if start_seq is not None and start_seq - 1 > prev_upto:
        async with acting_for(sessionmaker, agent_id) as db:
            older = await record.messages_page(
                db, session_id, after_seq=prev_upto, limit=start_seq - 1 - prev_upto
            )
            older = [m for m in older if m.seq < start_seq]
            if older:
                summary_text = summarise(prev_text, older, reserve)
                summary_upto = older[-1].seq
                await record.record_events(
                    db,
                    session_id,
                    agent_id,
                    [
                        record.NewEvent(
                            key=f"summary:{summary_upto}",
                            kind=event_kinds.CONTEXT_SUMMARY,
                            payload={"upto_seq": summary_upto, "text": summary_text},
                        )
                    ],
                )

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
    messages.extend(_to_chat(m) for m in window)
    tokens = sum(message_tokens(m) for m in messages)
    return Assembled(
        messages=messages,
        tokens=tokens,
        recent_from_seq=start_seq,
        summary_upto_seq=summary_upto,
        memories=len(memory_lines),
        artifacts=len(artifact_lines),
        dropped_for_budget=len(recent) - len(window),
    )
