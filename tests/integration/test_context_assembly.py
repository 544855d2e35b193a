"""Context assembly packs recent turns, a kept summary of older ones and memories into a budget."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.context import ContextBudget, assemble, count_tokens, message_tokens
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import store as record

pytestmark = pytest.mark.integration


async def _session(sm: async_sessionmaker[DbSession], n: int, start: int = 0) -> tuple[str, str]:
    sid, agent = f"ctx-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    async with sm.begin() as db:
        await record.create_session(
            db, session_id=sid, agent_id=agent, goal="measure the river", status="running"
        )
    await _append(sm, sid, agent, start, n)
    return sid, agent


async def _append(
    sm: async_sessionmaker[DbSession], sid: str, agent: str, start: int, n: int
) -> None:
    msgs = []
    for seq in range(start, start + n):
        if seq % 3 == 1:
            msgs.append(
                record.NewMessage(
                    seq=seq,
                    role="assistant",
                    content=f"step {seq} thinking",
                    tool_calls=[
                        {"id": f"c{seq}", "name": "recall", "arguments": '{"query": "depth"}'}
                    ],
                )
            )
        elif seq % 3 == 2:
            msgs.append(
                record.NewMessage(
                    seq=seq,
                    role="tool",
                    content=f"depth reading {seq} " * 20,
                    name="recall",
                    tool_call_id=f"c{seq - 1}",
                )
            )
        else:
            msgs.append(
                record.NewMessage(seq=seq, role="user", content=f"note {seq} about the river")
            )
    async with sm.begin() as db:
        await record.append_messages(db, sid, agent, msgs)


async def test_window_fits_budget_and_older_turns_are_summarised_and_kept(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _session(sessionmaker, 300)
    budget = ContextBudget(total_tokens=3000)
    first = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=budget)
    assert first.tokens <= budget.total_tokens
    assert first.messages[-1].tool_call_id == "c298"  # the newest message (seq 299) is always sent
    assert first.recent_from_seq is not None and first.recent_from_seq > 0
    assert first.messages[2].role != "tool"  # the window never starts with an orphan tool result
    assert first.summary_upto_seq == first.recent_from_seq - 1
    assert "Summary of earlier turns" in first.messages[1].content
    async with sessionmaker() as db:
        kept = await record.list_events(db, sid, kind="context_summary")
    assert [e.payload["upto_seq"] for e in kept] == [first.summary_upto_seq]

    await _append(sessionmaker, sid, agent, 300, 60)
    second = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=budget)
    assert second.summary_upto_seq is not None and second.summary_upto_seq > first.summary_upto_seq
    async with sessionmaker() as db:
        kept = await record.list_events(db, sid, kind="context_summary")
    assert len(kept) == 2  # the earlier summary is kept, the new one extends it
    assert second.messages[-1].tool_call_id == "c358"  # newest: seq 359
    newest = max(kept, key=lambda e: e.payload["upto_seq"])
    assert newest.payload["text"] in second.messages[1].content


async def test_small_session_is_sent_whole_without_summary(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _session(sessionmaker, 6)
    got = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=ContextBudget())
    assert got.summary_upto_seq is None and got.recent_from_seq == 0
    assert [m.role for m in got.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
        "tool",
    ]


async def test_recalled_memories_are_included(sessionmaker: async_sessionmaker[DbSession]) -> None:
    sid, agent = await _session(sessionmaker, 4)
    memory = MemoryStore(sessionmaker, HashingEmbedder())
    await memory.add(
        agent, "The river depth gauge is at the north bridge.", subject="gauge location"
    )
    await memory.add(agent, "Lunch is at noon.", subject="lunch")
    got = await assemble(
        sessionmaker, session_id=sid, agent_id=agent, budget=ContextBudget(), memory=memory
    )
    assert got.memories >= 1
    assert "north bridge" in got.messages[1].content


def test_token_estimate_grows_with_text() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("a" * 400) == 67
    assert count_tokens("one, two. three!") == 6
    from vigil.activities.models.base import ChatMessage

    assert message_tokens(ChatMessage(role="user", content="hi")) > count_tokens("hi")
