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


async def _goal_session(sm: async_sessionmaker[DbSession], goal: str, n: int) -> tuple[str, str]:
    """A session as vigil writes one: the goal is its first message, then ``n`` turns."""
    sid, agent = f"ctx-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    async with sm.begin() as db:
        await record.create_session(db, session_id=sid, agent_id=agent, goal=goal, status="running")
        await record.append_messages(
            db, sid, agent, [record.NewMessage(seq=0, role="user", content=goal)]
        )
    await _append(sm, sid, agent, 1, n)
    return sid, agent


async def test_the_goal_stays_in_the_context_after_its_message_leaves_the_window(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    goal = "Survey every bridge on the river. " + "Record each one's depth. " * 30 + "END-OF-GOAL"
    sid, agent = await _goal_session(sessionmaker, goal, 300)
    budget = ContextBudget(total_tokens=3000)
    got = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=budget)
    assert got.recent_from_seq is not None and got.recent_from_seq > 0  # seq 0 left the window
    assert got.tokens <= budget.total_tokens
    note = got.messages[1].content
    assert goal in note  # whole, not the summary's first words of it
    assert note.index(goal) < note.index("Summary of earlier turns")
    # Sent once: not pinned while its own message is still in the window.
    small, small_agent = await _goal_session(sessionmaker, goal, 6)
    whole = await assemble(sessionmaker, session_id=small, agent_id=small_agent, budget=budget)
    assert whole.recent_from_seq == 0
    assert sum(m.content.count("END-OF-GOAL") for m in whole.messages) == 1


async def test_a_goal_longer_than_its_share_keeps_its_beginning_and_its_end(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    goal = "BEGIN-OF-GOAL " + " ".join(f"point{i}" for i in range(6000)) + " END-OF-GOAL"
    sid, agent = await _goal_session(sessionmaker, goal, 40)
    budget = ContextBudget(total_tokens=3000)
    got = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=budget)
    assert got.tokens <= budget.total_tokens
    note = got.messages[1].content
    assert "BEGIN-OF-GOAL" in note and "END-OF-GOAL" in note
    assert "characters of the goal left out" in note
    assert count_tokens(note) < budget.total_tokens // 2
    # A redirect's new goal is pinned in its place once its message has left the window.
    new_goal = "Now map the lakes instead. NEW-GOAL-END"
    async with sessionmaker.begin() as db:
        await record.update_session(db, sid, goal=new_goal)
        await record.append_messages(
            db, sid, agent, [record.NewMessage(seq=41, role="user", content=new_goal)]
        )
    await _append(sessionmaker, sid, agent, 42, 300)
    moved = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=budget)
    assert moved.recent_from_seq is not None and moved.recent_from_seq > 41
    assert new_goal in moved.messages[1].content
    assert "BEGIN-OF-GOAL" not in moved.messages[1].content.split("Summary of earlier")[0]


def test_a_pinned_goal_is_never_longer_than_the_goal() -> None:
    from vigil.activities.context import pinned_goal

    for goal in ("g", "a short goal", "x" * 300):
        assert len(pinned_goal(goal, 0)) <= len(goal)


async def test_a_result_whose_call_is_too_long_to_send_is_told_as_text(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A call whose arguments alone are over the budget (a model writing a long file) left
    its results the whole window: tool messages without the call, which a provider refuses
    ("messages with role 'tool' must be a response to a preceding message with
    'tool_calls'"), and the session failed. The results are sent as a user message that
    says what they are; the call is in the summary."""
    sid, agent = await _session(sessionmaker, 1)
    long_call = '{"name": "big.md", "content": "' + "lorem ipsum dolor sit amet " * 2000 + '"}'
    async with sessionmaker.begin() as db:
        await record.append_messages(
            db,
            sid,
            agent,
            [
                record.NewMessage(
                    seq=1,
                    role="assistant",
                    content="writing it",
                    tool_calls=[
                        {"id": "w1", "name": "write_artifact", "arguments": long_call},
                        {"id": "w2", "name": "write_artifact", "arguments": long_call},
                    ],
                ),
                record.NewMessage(
                    seq=2,
                    role="tool",
                    content="wrote big.md",
                    name="write_artifact",
                    tool_call_id="w1",
                ),
                record.NewMessage(
                    seq=3,
                    role="tool",
                    content="wrote big.md again",
                    name="write_artifact",
                    tool_call_id="w2",
                ),
            ],
        )
    got = await assemble(
        sessionmaker, session_id=sid, agent_id=agent, budget=ContextBudget(total_tokens=8000)
    )
    assert [m.role for m in got.messages] == ["system", "system", "user"]
    told = got.messages[-1].content
    assert "write_artifact (id w1)" in told and "wrote big.md\n" in told
    assert told.endswith("wrote big.md again")
    assert "Summary of earlier turns" in got.messages[1].content
    assert got.recent_from_seq == 2 and got.summary_upto_seq == 1
    assert got.tokens == sum(message_tokens(m) for m in got.messages)


async def test_names_of_megabytes_stay_out_of_the_summary(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A call of a tool named with megabytes (a model's garbage) summarised as the newest
    line of the summary, which is kept whatever its size: the context's note was 3 MB,
    and its request failed. Names are cut in the summary and in results told as text."""
    sid, agent = await _session(sessionmaker, 1)
    huge_name = "tool" * 750_000
    async with sessionmaker.begin() as db:
        await record.append_messages(
            db,
            sid,
            agent,
            [
                record.NewMessage(
                    seq=1,
                    role="assistant",
                    content="",
                    tool_calls=[
                        {"id": "c1", "name": "http_fetch", "arguments": '{"url": "x"}'},
                        {"id": "c2", "name": huge_name, "arguments": "{}"},
                    ],
                ),
                record.NewMessage(
                    seq=2,
                    role="tool",
                    content="error: bad url",
                    name="http_fetch",
                    tool_call_id="c1",
                ),
                record.NewMessage(
                    seq=3,
                    role="tool",
                    content="error: unknown tool",
                    name=huge_name,
                    tool_call_id="c2",
                ),
            ],
        )
    got = await assemble(
        sessionmaker, session_id=sid, agent_id=agent, budget=ContextBudget(total_tokens=8000)
    )
    assert got.tokens <= 8000
    assert all(len(m.content) < 2000 for m in got.messages), [len(m.content) for m in got.messages]
