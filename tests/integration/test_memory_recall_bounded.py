"""Recall stays bounded on big memories: full-text candidates are capped and ranked,
and under the agent role the searches go through the GIN and HNSW indexes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.store import (
    EF_SEARCH_MAX,
    MemoryStore,
    TextStatistics,
    _checked_vector_sql,
    _vector_sql,
    ef_search_for,
    text_ladder,
    text_ranking,
)
from vigil.activities.record.rls import AGENT_ROLE, AGENT_SETTING, acting_for
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import asyncpg_dsn

pytestmark = pytest.mark.integration

FILLER = ["gravel", "lantern", "meadow", "copper", "thistle", "willow", "quartz", "saddle"]


@pytest.fixture
def agent() -> str:
    return f"agent-{uuid.uuid4()}"


async def _crowd(store: MemoryStore, agent: str, n: int) -> None:
    """``n`` memories that each hold the word walrus and nothing else of the query."""
    for i in range(n):
        words = " ".join(FILLER[(i + j) % len(FILLER)] for j in range(3))
        await store.add(agent, f"walrus note {i} {words}", subject=f"crowd-{i}")


async def _add_each(store: MemoryStore, agent: str, texts: list[str], label: str) -> list[int]:
    """The ids of ``texts``, each remembered about a subject of its own."""
    return [
        (await store.add(agent, text, subject=f"{label}-{i}")).id for i, text in enumerate(texts)
    ]


async def test_full_text_candidates_are_bounded_and_the_best_ranked(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    store = MemoryStore(sessionmaker, HashingEmbedder(384), text_scan_limit=10)
    await _crowd(store, agent, 40)
    best = await _add_each(
        store,
        agent,
        ["walrus tusks measured at the harbour", "tusks of an old walrus in the harbour"],
        "best",
    )
    # Every memory holds "walrus": unbounded, all 42 would be ranked and returned.
    hits = await store.recall(agent, "walrus tusks harbour", k=100, mode="text")
    assert len(hits) == len(best) + 10
    assert sorted(h.id for h in hits[: len(best)]) == sorted(best)
    assert sorted(h.text_rank for h in hits if h.id in best) == [1, 2]

    # With the default bound all of them are ranked, the best still first.
    roomy = MemoryStore(sessionmaker, HashingEmbedder(384))
    hits = await roomy.recall(agent, "walrus tusks harbour", k=100, mode="text")
    assert len(hits) == 42
    assert sorted(h.id for h in hits[:2]) == sorted(best)

    # recall asks for max(40, 2k) candidates: k=5 gets 40 of the 42.
    hits = await roomy.recall(agent, "walrus tusks harbour", k=5, mode="hybrid")
    assert len(hits) == 5
    assert {h.id for h in hits if h.text_rank is not None} >= set(best)


async def test_a_search_syntax_query_is_bounded_too(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    store = MemoryStore(sessionmaker, HashingEmbedder(384), text_scan_limit=5)
    await _crowd(store, agent, 12)
    hits = await store.recall(agent, '"walrus note" -tusks', k=100, mode="text")
    assert len(hits) == 5


def test_the_ladder_goes_from_all_words_to_any_word() -> None:
    assert text_ladder([]) == []
    assert text_ladder(["cat"]) == ["'cat'"]
    steps = text_ladder(["walrus", "tusk", "harbour"])
    assert steps[0] == "('harbour' & 'walrus' & 'tusk')"
    assert steps[1].count("|") == 2 and steps[1].count("&") == 3
    assert steps[-1] == "'harbour' | 'walrus' | 'tusk'"
    many = text_ladder([f"word{i:02d}" for i in range(12)])
    assert many[-1].count("|") == 7  # the 8 longest words take part
    assert all(step.count("|") < 32 for step in many)
    assert text_ladder(["o'neil"]) == ["'o''neil'"]


def test_the_statistics_leave_out_steps_no_row_is_expected_to_match() -> None:
    words = ["walrus", "tusk", "harbour"]
    # Each word in half the rows: 12.5 of 100 rows are expected to hold all three.
    common = TextStatistics({w: 0.5 for w in words}, floor=0.001, rows=100)
    assert common.expected(words, 3) == pytest.approx(12.5)
    assert common.expected(words, 2) == pytest.approx(50.0)
    assert common.expected(words, 1) == pytest.approx(87.5)
    assert text_ladder(words, common) == text_ladder(words)
    # Words at the floor: all three are expected in 1e-9 * 1e6 rows.
    rare = TextStatistics({}, floor=0.001, rows=1_000_000)
    assert rare.expected(words, 3) == pytest.approx(1e-3)
    assert text_ladder(words, rare) == text_ladder(words)[1:]
    # One common word (in 50,000 rows, more than one step ranks) and two rare ones: the
    # all-words step is ruled out, and the any-word step is split, the rarer words first.
    mixed = TextStatistics({"walrus": 0.5}, floor=1e-6, rows=100_000)
    assert mixed.expected(words, 2) == pytest.approx(0.1, rel=1e-3)
    assert text_ladder(words, mixed) == [
        "('harbour' & 'walrus') | ('harbour' & 'tusk') | ('walrus' & 'tusk')",
        "'harbour' | 'tusk'",
        "'walrus'",
    ]
    assert text_ladder(words, mixed, common_rows=60_000) == text_ladder(words)[1:]
    # A word in 1,500 of 100,000 rows is common by default (more than COMMON_WORD_ROWS):
    # its rows come after those holding the rarer words, as with a word in half the rows.
    some = TextStatistics({"walrus": 0.015}, floor=1e-6, rows=100_000)
    assert text_ladder(words, some) == text_ladder(words, mixed)
    assert text_ladder(words, some, common_rows=2_000)[-1] == "'harbour' | 'walrus' | 'tusk'"
    # Two common words: the pair of them comes after the pairs holding the rare word.
    two = TextStatistics({"walrus": 0.5, "harbour": 0.5}, floor=1e-6, rows=100_000)
    assert text_ladder(words, two)[:2] == [
        "('harbour' & 'tusk') | ('walrus' & 'tusk')",
        "('harbour' & 'walrus')",
    ]
    assert text_ranking(words) == text_ladder(words)[-1]
    # The any-two and any-word steps are never left out, nor is a single word's.
    tiny = TextStatistics({}, floor=1e-9, rows=10)
    assert text_ladder(words, tiny) == text_ladder(words)[1:]
    assert len(text_ladder([*words, "ivory"], tiny)) == 2
    assert text_ladder(["walrus"], tiny) == ["'walrus'"]


async def test_steps_the_statistics_rule_out_are_skipped_and_the_best_still_come_first(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    store = MemoryStore(sessionmaker, HashingEmbedder(384))
    every_step = MemoryStore(sessionmaker, HashingEmbedder(384), text_statistics=False)
    await _crowd(store, agent, 60)
    best = (await store.add(agent, "walrus tusks by the quayside lighthouse", subject="b")).id
    second = (await store.add(agent, "tusks near a lighthouse", subject="s")).id
    async with sessionmaker() as db, db.begin():
        await db.execute(text("ANALYZE memories"))

    query = "walrus tusks quayside lighthouse"
    hits = await store.recall(agent, query, k=10, mode="text")
    expected = await every_step.recall(agent, query, k=10, mode="text")
    # The statistics were read and ruled out at least the all-words step: the words
    # other than "walrus" are too rare in the table for any row to be expected to hold
    # all four. The memory that does hold them is found by a later step, still first.
    assert store._statistics is not None and store._statistics[0] is not None
    assert store.text_steps["predicted_empty"] >= 1
    assert every_step.text_steps["predicted_empty"] == 0
    assert hits[0].id == best and hits[1].id == second
    assert [h.id for h in hits] == [h.id for h in expected]
    sent = store.text_steps["sent"]
    assert sent < every_step.text_steps["sent"]

    # What was read is kept (not read again per recall): here, as if no statistics
    # existed, which leaves every step in.
    store._statistics = (None, store._statistics[1])
    await store.recall(agent, query, k=10, mode="text")
    assert store.text_steps["sent"] - sent == every_step.text_steps["sent"]


async def test_a_rare_words_memories_are_not_crowded_out_by_a_common_words(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    # Each step ranks at most 10 rows: "walrus", in 60 memories, is common for it.
    store = MemoryStore(sessionmaker, HashingEmbedder(384), text_scan_limit=10)
    await _crowd(store, agent, 60)
    rare = await _add_each(
        store, agent, ["a narwhal sighting off the coast", "narwhal pods migrate"], "rare"
    )
    async with sessionmaker() as db, db.begin():
        await db.execute(text("ANALYZE memories"))

    hits = await store.recall(agent, "walrus narwhal", k=10, mode="text")
    statistics = store._statistics[0] if store._statistics else None
    assert statistics is not None and statistics.share("walrus") * statistics.rows > 10
    # The any-word step ran as two: "narwhal" first, then "walrus". Without the split,
    # it ranks the first 10 rows holding either word, which here are walrus rows.
    assert store.text_steps["split"] >= 1
    assert sorted(h.id for h in hits[:2]) == sorted(rare)
    assert len(hits) == 10


def test_ef_search_follows_the_number_of_memories() -> None:
    assert ef_search_for(0, 40) == 40
    assert ef_search_for(5_000, 40) == 40
    assert ef_search_for(100_000, 40) == 179
    assert ef_search_for(1_000_000, 40) == 566
    assert ef_search_for(100, 120) == 120
    assert ef_search_for(10**9, 40) == EF_SEARCH_MAX


async def test_recall_under_the_agent_role_uses_the_gin_and_hnsw_indexes(
    sessionmaker: async_sessionmaker[DbSession], database_url: str, agent: str
) -> None:
    store = MemoryStore(sessionmaker, HashingEmbedder(384))
    await _crowd(store, agent, 30)
    async with sessionmaker() as db, db.begin():
        await db.execute(text("ANALYZE memories"))

    # Vector half: the statement recall runs, explained as the agent (policies on).
    [vector] = await store.embedder.embed(["walrus harbour"])
    literal = "[" + ",".join(repr(v) for v in vector) + "]"
    filters = "m.agent_id = :agent_id AND m.forgotten_at IS NULL AND m.superseded_by IS NULL"
    # A test table is small: the planner is told to plan as for a big one.
    async with acting_for(sessionmaker, agent) as db:
        await db.execute(text("SET LOCAL enable_seqscan = off"))
        await db.execute(text("SET LOCAL enable_sort = off"))
        plans = [
            "\n".join(
                row[0]
                for row in await db.execute(
                    text("EXPLAIN " + statement), {"agent_id": agent, "vector": literal, "n": 40}
                )
            )
            # The search alone, and as recall runs it: with the embedder check beside it.
            for statement in (
                _vector_sql(384, filters, exact=False),
                _checked_vector_sql(384, filters, ""),
            )
        ]
    assert all("ix_memories_embedding_384" in plan for plan in plans), plans

    # Full-text half. A test table is small, so the agent's btree indexes would win on
    # cost; they are dropped inside a transaction that is rolled back, which leaves the
    # planner one question: can the match be a GIN index condition under the agent role?
    direct = await _explain_as_agent(
        database_url,
        agent,
        "EXPLAIN SELECT id FROM memories WHERE tsv @@ to_tsquery('english', 'walrus') LIMIT 10",
    )
    # A plain query cannot (the match is not leakproof, so the policy's filter runs
    # first) ...
    assert "ix_memories_tsv" not in direct
    # ... so recall's search function does the match, and plans it through the GIN index.
    plans = await _explain_as_agent(
        database_url,
        agent,
        "SELECT count(*) FROM vigil_memory_text_search($1::text[]::tsquery[], "
        "$2::tsquery, NULL, NULL, NULL, true, 40, 2000)",
        text_ladder(["walrus", "harbour"]),
        "'walrus' | 'harbour'",
    )
    assert "ix_memories_tsv" in plans


async def _explain_as_agent(database_url: str, agent: str, sql: str, *args: object) -> str:
    """The plan of ``sql`` run as ``agent`` (an EXPLAIN's rows, or the search function's
    NOTICEs), with only the GIN index left to find the agent's rows."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    notices: list[str] = []
    conn.add_log_listener(lambda _c, message: notices.append(message.message))
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("DROP INDEX ix_memories_agent_id, ix_memories_agent_kind_subject_key")
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL vigil.explain_memory_search = on")
        await conn.fetchval(
            "SELECT set_config('role', $1, true), set_config($2, $3, true)",
            AGENT_ROLE,
            AGENT_SETTING,
            agent,
        )
        rows = await conn.fetch(sql, *args)
    finally:
        await tx.rollback()
        await conn.close()
    if sql.startswith("EXPLAIN"):
        return "\n".join(str(row[0]) for row in rows)
    assert rows[0][0] == 30
    return "\n".join(n for n in notices if n.startswith("vigil_memory_text_search"))


async def test_a_crowd_past_the_cheap_first_pass_keeps_the_best_first(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    # A step ranks the rows it fetched in two passes: the best max(200, 5 x wanted) by
    # ts_rank, then those by ts_rank_cd. With 230 rows holding one query word, the two
    # holding all three must still come first, in cover-density order.
    store = MemoryStore(sessionmaker, HashingEmbedder(384))
    await _crowd(store, agent, 230)
    near = (await store.add(agent, "walrus tusks by the harbour wall", subject="near")).id
    far = (
        await store.add(
            agent, "walrus seen once; much later, far off, tusks; then a harbour", subject="far"
        )
    ).id
    hits = await store.recall(agent, "walrus tusks harbour", k=5, mode="text")
    assert [h.id for h in hits[:2]] == [near, far]
    assert len(hits) == 5
    ranks = [h.text_rank for h in hits]
    assert ranks == sorted(ranks)


async def test_hybrid_recall_runs_its_halves_at_once_with_the_same_result(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    together = MemoryStore(sessionmaker, HashingEmbedder(384), concurrent_halves=2)
    apart = MemoryStore(sessionmaker, HashingEmbedder(384), concurrent_halves=0)
    await _crowd(together, agent, 30)
    await together.add(agent, "the walrus hauled out on the harbour ice", subject="ice")
    for query in ["walrus harbour", "copper lantern", '"walrus note" -gravel', "nothing"]:
        a = await together.recall(agent, query, k=8)
        b = await apart.recall(agent, query, k=8)
        assert [(h.id, h.text_rank, h.vector_rank) for h in a] == [
            (h.id, h.text_rank, h.vector_rank) for h in b
        ]
    assert together.hybrid_runs == {"concurrent": 4}
    assert apart.hybrid_runs == {"sequential": 4}

    # Past the limit a recall runs its halves one after the other; the limit is freed
    # when each recall ends.
    together.hybrid_runs.clear()
    results = await asyncio.gather(*(together.recall(agent, "walrus ice") for _ in range(5)))
    assert len({tuple(h.id for h in r) for r in results}) == 1
    assert together.hybrid_runs["concurrent"] >= 2
    assert sum(together.hybrid_runs.values()) == 5
    assert together._halves_in_flight == 0


async def test_a_cancelled_hybrid_recall_gives_back_both_connections(
    database_url: str, agent: str
) -> None:
    engine = make_engine(database_url, pool_size=2)
    try:
        store = MemoryStore(make_sessionmaker(engine), HashingEmbedder(384))
        await _crowd(store, agent, 20)
        for delay in (0.0, 0.001, 0.003, 0.01):
            task = asyncio.ensure_future(store.recall(agent, "walrus harbour copper"))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
            assert store._halves_in_flight == 0
        # ... and the store still recalls.
        assert await store.recall(agent, "walrus harbour")
    finally:
        await engine.dispose()
