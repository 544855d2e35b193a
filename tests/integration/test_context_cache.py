"""A worker's kept context gives exactly what a worker without it rebuilds from the record.

Each step here is what the model activity does: messages land in the record (written by
"another process", straight through the record's queries), then the context is assembled
with the worker's cache, and again by a worker without one; the message lists must be
identical, whatever changed in between (a late write filling a gap, a human message, a
summary written by another worker, a redirect, a new agent version, a forgotten memory,
an erased and re-created session).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.context import Assembled, ContextBudget, assemble
from vigil.activities.context_cache import CachingEmbedder, ContextCache, ContextCacheConfig
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import MemoryStore
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import erasure
from vigil.activities.record import store as record

pytestmark = pytest.mark.integration

BUDGET = ContextBudget(total_tokens=3000, max_recent=120)


def _message(seq: int) -> record.NewMessage:
    if seq % 3 == 1:
        return record.NewMessage(
            seq=seq,
            role="assistant",
            content=f"step {seq}: checking gauge {seq % 7}",
            tool_calls=[{"id": f"c{seq}", "name": "recall", "arguments": '{"query": "depth"}'}],
        )
    if seq % 3 == 2:
        return record.NewMessage(
            seq=seq,
            role="tool",
            name="recall",
            tool_call_id=f"c{seq - 1}",
            content=f"gauge {seq % 7} depth {seq % 97} cm " * 12,
        )
    return record.NewMessage(seq=seq, role="user", content=f"note {seq} about the river")


async def _write(sm: async_sessionmaker[DbSession], sid: str, agent: str, seqs: list[int]) -> None:
    async with sm.begin() as db:
        await record.append_messages(db, sid, agent, [_message(s) for s in seqs])


async def _open(
    sm: async_sessionmaker[DbSession], n: int, agent: str | None = None
) -> tuple[str, str]:
    sid, agent = f"ctx-{uuid.uuid4()}", agent or f"agent-{uuid.uuid4()}"
    async with sm.begin() as db:
        await record.create_session(
            db, session_id=sid, agent_id=agent, goal="survey the river", status="running"
        )
    await _write(sm, sid, agent, list(range(n)))
    return sid, agent


async def _both(
    sm: async_sessionmaker[DbSession],
    sid: str,
    agent: str,
    cache: ContextCache,
    memory: MemoryStore | None = None,
) -> tuple[Assembled, Assembled]:
    warm = await assemble(
        sm, session_id=sid, agent_id=agent, budget=BUDGET, memory=memory, cache=cache
    )
    cold = await assemble(sm, session_id=sid, agent_id=agent, budget=BUDGET, memory=memory)
    assert warm.messages == cold.messages
    assert (warm.recent_from_seq, warm.summary_upto_seq) == (
        cold.recent_from_seq,
        cold.summary_upto_seq,
    )
    return warm, cold


async def test_warm_and_cold_give_the_same_context_over_a_long_session(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _open(sessionmaker, 600)
    memory = MemoryStore(sessionmaker, CachingEmbedder(HashingEmbedder(384)))
    await memory.add(agent, "The river gauge 3 sits at the north bridge.", subject="gauge 3")
    await memory.add(agent, "Depth readings are in centimetres.", subject="units")
    cache = ContextCache()
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert warm.cache == "cold"  # nothing kept yet
    assert warm.summary_upto_seq is not None and warm.memories >= 1
    seq = 600
    for step in range(40):
        if step == 10:
            # A late write: seq+1 lands before seq (another process); then seq fills the gap.
            await _write(sessionmaker, sid, agent, [seq + 1])
            warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
            await _write(sessionmaker, sid, agent, [seq])
            seq += 2
        else:
            await _write(sessionmaker, sid, agent, [seq, seq + 1, seq + 2])
            seq += 3
        warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
        assert warm.cache == "warm"
    assert warm.messages[-1].content == _message(seq - 1).content  # the newest is sent
    assert cache.stats["window_hit"] >= 40
    async with sessionmaker() as db:
        summaries = await record.list_events(db, sid, kind="context_summary")
    # The window leaves slack when it is cut: the summary changes every few steps, not each.
    assert 1 < len(summaries) < 20
    assert cache.stats["recall_hit"] > 0  # human words unchanged: recall not run again
    # Another worker (no cache of its own yet) rebuilds the same context.
    other = ContextCache()
    rebuilt = await assemble(
        sessionmaker, session_id=sid, agent_id=agent, budget=BUDGET, memory=memory, cache=other
    )
    assert rebuilt.cache == "cold" and rebuilt.messages == warm.messages


async def test_a_summary_written_by_another_worker_is_picked_up(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _open(sessionmaker, 300)
    mine, theirs = ContextCache(), ContextCache()
    await _both(sessionmaker, sid, agent, mine)
    for start in (300, 330):
        # Steps served by another worker write summaries this one has not seen.
        await _write(sessionmaker, sid, agent, list(range(start, start + 30)))
        await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=BUDGET, cache=theirs)
    warm, _ = await _both(sessionmaker, sid, agent, mine)
    async with sessionmaker() as db:
        summaries = await record.list_events(db, sid, kind="context_summary")
    newest = summaries[-1] if summaries else None
    assert newest is not None and newest.payload["upto_seq"] == warm.summary_upto_seq
    assert warm.cache == "warm"


async def test_redirect_new_version_and_forget_change_the_kept_context(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _open(sessionmaker, 200)
    memory = MemoryStore(sessionmaker, HashingEmbedder(384))
    river = await memory.add(agent, "The river gauge sits at the north bridge.", subject="gauge")
    lighthouse = await memory.add(
        agent, "The lighthouse keeper logs ships at dawn.", subject="lighthouse"
    )
    # Kept results stand for the whole test, however slow the machine: each forgotten
    # memory below is caught by the check of a kept result, not by its expiry.
    cache = ContextCache(ContextCacheConfig(recall_seconds=3600))
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert "north bridge" in warm.messages[1].content

    # Redirect: the goal the recall follows changes.
    async with sessionmaker.begin() as db:
        await record.update_session(db, sid, goal="count the lighthouse ships")
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert "lighthouse keeper" in warm.messages[1].content

    # A new agent version pins a new system prompt.
    async with sessionmaker.begin() as db:
        await agent_rows.set_session_agent(db, sid, version=None, system_prompt="Count ships.")
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert warm.messages[0].content == "Count ships."

    # A forgotten memory is never sent again, even though the recall text is unchanged.
    async with sessionmaker.begin() as db:
        await record.update_session(db, sid, goal="survey the river")
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert "north bridge" in warm.messages[1].content
    await memory.forget(agent, river.id, by="tester", reason="wrong bridge")
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert "north bridge" not in warm.messages[1].content

    # Nor when the recall text goes back to one whose result is kept from before: that
    # result is checked by a statement of its own (the read checks the one the window
    # last used), and a memory forgotten since is not sent.
    await memory.forget(agent, lighthouse.id, by="tester", reason="no lighthouse")
    hits = cache.stats["recall_hit"]
    async with sessionmaker.begin() as db:
        await record.update_session(db, sid, goal="count the lighthouse ships")
    warm, _ = await _both(sessionmaker, sid, agent, cache, memory)
    assert "lighthouse keeper" not in warm.messages[1].content
    assert cache.stats["recall_hit"] == hits  # the kept result did not stand


async def test_an_erased_session_started_again_under_its_id_is_read_anew(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    sid, agent = await _open(sessionmaker, 90)
    cache = ContextCache()
    await _both(sessionmaker, sid, agent, cache)
    async with sessionmaker.begin() as db:
        await erasure.purge(db, await erasure.session_scope(db, sid))
    gone = await assemble(sessionmaker, session_id=sid, agent_id=agent, budget=BUDGET, cache=cache)
    assert [m.role for m in gone.messages] == ["system"]
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=sid, agent_id=agent, goal="a new survey", status="running"
        )
        await record.append_messages(
            db, sid, agent, [record.NewMessage(seq=0, role="user", content="a new survey")]
        )
    warm, _ = await _both(sessionmaker, sid, agent, cache)
    assert [m.content for m in warm.messages[1:]] == ["a new survey"]


async def test_repeated_text_is_embedded_once() -> None:
    inner = HashingEmbedder(64)
    cached = CachingEmbedder(inner, entries=2)
    first = await cached.embed(["a river", "a bridge", "a river"])
    assert first[0] == first[2] == (await inner.embed(["a river"]))[0]
    assert (cached.hits, cached.misses) == (1, 2)
    again = await cached.embed(["a river"])
    assert again[0] == first[0] and cached.hits == 2
    await cached.embed(["a lake", "a sea"])  # evicts the older entries
    await cached.embed(["a river"])
    assert cached.misses == 5
    assert repr(cached) == repr(inner) and cached.dim == 64
