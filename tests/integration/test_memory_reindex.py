"""Rebuildable embeddings: each memory records its embedder, recall compares only vectors
of the agent's active embedder, a reindex switches over at once after building the new
vectors beside the old, resumes after an interruption without duplicates, and a process
configured with another embedder is refused, never silently mixed."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.cli import Vigil, cli_env
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, session_input, start, stub_settings
from vigil.activities.memory.embedders import HashingEmbedder
from vigil.activities.memory.provenance import (
    EmbedderMismatch,
    EmbedderNotReady,
    agents_on_other_embedders,
    check_embedder,
    identity_of,
)
from vigil.activities.memory.reindex import Reindexer, ReindexProgress
from vigil.activities.memory.store import MemoryStore
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

F_SETPIPE_SZ = 1031  # Linux fcntl: the capacity of a pipe

OLD = HashingEmbedder(384)
NEW = HashingEmbedder(256)
# No agent of the test database ever has memories from it: a plain change of settings.
UNUSED = HashingEmbedder(200)
FACTS = [f"fact {n}: the {w} service listens on port {8000 + n}" for n, w in enumerate(
    ["billing", "search", "ingest", "mailer", "auth", "reports", "payments", "backup"] * 3
)]  # fmt: skip


class Breaks:
    """An embedder that dies after ``good`` batches (a killed reindex, a lost model server)."""

    def __init__(self, inner: HashingEmbedder, good: int) -> None:
        self.inner, self.good, self.calls = inner, good, 0
        self.dim, self.name, self.texts = inner.dim, inner.name, 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError("embedder process killed")
        self.texts += len(texts)
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        return None


class Counting(Breaks):
    def __init__(self, inner: HashingEmbedder) -> None:
        super().__init__(inner, good=10**9)


async def _forget_agent(sessionmaker: async_sessionmaker[DbSession], agent: str) -> None:
    # Another embedder left active would make every later worker of this test database
    # refuse to start: the agent goes away with its memories.
    async with sessionmaker() as db, db.begin():
        await db.execute(text("DELETE FROM memory_writes WHERE agent_id = :a"), {"a": agent})
        await db.execute(text("DELETE FROM memories WHERE agent_id = :a"), {"a": agent})
        await db.execute(text("DELETE FROM memory_embedders WHERE agent_id = :a"), {"a": agent})


@pytest.fixture
async def agent(sessionmaker: async_sessionmaker[DbSession]) -> AsyncIterator[str]:
    name = f"reindex-{uuid.uuid4().hex[:10]}"
    yield name
    await _forget_agent(sessionmaker, name)


async def _fill(store: MemoryStore, agent: str) -> list[int]:
    return [(await store.add(agent, fact)).id for fact in FACTS]


async def _side_rows(sessionmaker: async_sessionmaker[DbSession], agent: str) -> list[int]:
    async with sessionmaker() as db:
        rows = await db.execute(
            text("SELECT memory_id FROM memory_vectors WHERE agent_id = :a ORDER BY 1"),
            {"a": agent},
        )
        return [int(r[0]) for r in rows]


async def test_provenance_is_recorded(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    store = MemoryStore(sessionmaker, OLD)
    added = await store.add(agent, "the staging database is called stg-7")
    record = await store.get(agent, added.id)
    assert record is not None
    assert (record.embedder, record.embedder_version, record.dim) == ("hashing-384", "1", 384)
    async with sessionmaker() as db:
        row = (
            await db.execute(
                text("SELECT embedder, version, dim, state FROM memory_embedders "
                     "WHERE agent_id = :a"),
                {"a": agent},
            )
        ).one()  # fmt: skip
    assert tuple(row) == ("hashing-384", "1", 384, "active")
    # A row written without the store (COPY, hand-written SQL) takes the active embedder
    # when its dimension fits, and an embedder no recall compares with when it does not.
    async with sessionmaker() as db, db.begin():
        for dim in (384, 3):
            await db.execute(
                text("INSERT INTO memories (agent_id, kind, content, dim, embedding) "
                     "VALUES (:a, 'fact', 'raw', :d, CAST(:v AS vector))"),
                {"a": agent, "d": dim, "v": str([1.0] + [0.0] * (dim - 1))},
            )  # fmt: skip
        raw = await db.execute(
            text("SELECT dim, embedder, embedder_version FROM memories "
                 "WHERE agent_id = :a AND content = 'raw' ORDER BY dim"),
            {"a": agent},
        )  # fmt: skip
        assert [tuple(r) for r in raw] == [(3, "unknown-3", "1"), (384, "hashing-384", "1")]


async def test_switch_over_keeps_old_vectors_until_complete(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    old_store, new_store = MemoryStore(sessionmaker, OLD), MemoryStore(sessionmaker, NEW)
    ids = await _fill(old_store, agent)
    target = ids[5]

    # Half-way (the reindex died after two batches of four): recall still runs on the
    # old vectors, and the new embedder is refused.
    broken = Breaks(NEW, good=2)
    with pytest.raises(RuntimeError, match="killed"):
        await Reindexer(sessionmaker, broken, batch_size=4).run(agent)
    assert len(await _side_rows(sessionmaker, agent)) == 8
    found = await old_store.recall(agent, FACTS[5], k=3, mode="vector")
    assert found[0].id == target and found[0].similarity is not None
    with pytest.raises(EmbedderMismatch, match="hashing-384"):
        await new_store.recall(agent, FACTS[5], k=3)
    # A memory remembered meanwhile, with the old embedder, is part of the switch.
    late = await old_store.add(agent, "the cache node is called cache-12")

    seen: list[ReindexProgress] = []
    done = await Reindexer(sessionmaker, NEW, batch_size=4).run(agent, seen.append)
    assert done.switched and done.previous is not None and done.previous.name == "hashing-384"
    assert seen[0].resumed == 8 and seen[0].state == "building"
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # never goes back
    assert seen[-1].done == seen[-1].total == len(ids) + 1

    # After: the new vectors answer, the old embedder is refused, nothing is left aside.
    found = await new_store.recall(agent, FACTS[5], k=3, mode="vector")
    assert found[0].id == target
    assert (await new_store.recall(agent, "cache node cache-12", k=1))[0].id == late.id
    with pytest.raises(EmbedderMismatch, match="hashing-256"):
        await old_store.recall(agent, FACTS[5], k=3)
    with pytest.raises(EmbedderMismatch, match="vigil memory reindex --agent"):
        await old_store.add(agent, "one more fact for the old space")
    assert await _side_rows(sessionmaker, agent) == []
    record = await new_store.get(agent, target)
    assert record is not None
    assert (record.embedder, record.dim) == ("hashing-256", 256)
    assert record.metadata["embedder"] == "hashing-256"
    # Running it again changes nothing.
    again = await Reindexer(sessionmaker, NEW).run(agent)
    assert again.switched and again.total == 0


async def test_interrupted_reindex_resumes_without_duplicates(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    store = MemoryStore(sessionmaker, OLD)
    ids = await _fill(store, agent)
    first = Breaks(NEW, good=3)
    with pytest.raises(RuntimeError):
        await Reindexer(sessionmaker, first, batch_size=5).run(agent)
    written = await _side_rows(sessionmaker, agent)
    assert written == sorted(ids)[:15]  # three batches, in id order, each once

    second = Counting(NEW)
    done = await Reindexer(sessionmaker, second, batch_size=5).run(agent)
    # Only what the first run had not embedded was embedded again.
    assert second.texts == len(ids) - 15
    assert done.switched and done.resumed == 15 and done.done == len(ids)
    async with sessionmaker() as db:
        per_embedder = (
            await db.execute(
                text("SELECT embedder, count(*), count(DISTINCT id) FROM memories "
                     "WHERE agent_id = :a GROUP BY 1"),
                {"a": agent},
            )
        ).all()  # fmt: skip
        states = (
            await db.execute(
                text("SELECT embedder, state FROM memory_embedders WHERE agent_id = :a "
                     "ORDER BY 1"),
                {"a": agent},
            )
        ).all()  # fmt: skip
    assert [tuple(r) for r in per_embedder] == [("hashing-256", len(ids), len(ids))]
    assert [tuple(r) for r in states] == [("hashing-256", "active"), ("hashing-384", "retired")]


async def test_a_silent_embedder_change_is_refused(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    store = MemoryStore(sessionmaker, OLD)
    await store.add(agent, "the on-call rota changes on Mondays")
    other = MemoryStore(sessionmaker, NEW)
    with pytest.raises(EmbedderMismatch) as refused:
        await other.recall(agent, "on-call rota", k=3)
    message = str(refused.value)
    assert "hashing-384 (version 1, 384 dimensions)" in message
    assert f"vigil memory reindex --agent {agent} --embedder hashing --dim 256" in message
    with pytest.raises(EmbedderMismatch):
        await other.add(agent, "a fact in another vector space")
    # Full-text recall compares no vectors: it goes on.
    assert await other.recall(agent, "rota", k=3, mode="text")

    # Worker start: a plain settings change (no agent on the configured embedder) is
    # refused; the agents it would leave without recall are named.
    with pytest.raises(EmbedderNotReady, match="no agent's memories come from it"):
        await check_embedder(sessionmaker, UNUSED)
    assert (agent, identity_of(OLD)) in await agents_on_other_embedders(
        sessionmaker, identity_of(UNUSED)
    )
    assert agent not in dict(await check_embedder(sessionmaker, OLD))


async def test_a_reindex_rolled_out_per_agent_lets_the_worker_start(
    sessionmaker: async_sessionmaker[DbSession], agent: str
) -> None:
    """Some agents re-embedded, others not yet: a worker on the new embedder starts, names
    the others, and each of them alone is refused on recall until its reindex ran."""
    moved = f"{agent}-moved"
    try:
        await MemoryStore(sessionmaker, OLD).add(agent, "backups run at night")
        await MemoryStore(sessionmaker, UNUSED).add(moved, "backups run at noon")
        others = dict(await check_embedder(sessionmaker, UNUSED))
        assert others[agent] == identity_of(OLD) and moved not in others
        assert await MemoryStore(sessionmaker, UNUSED).recall(moved, "backups", k=1)
        with pytest.raises(EmbedderMismatch):
            await MemoryStore(sessionmaker, UNUSED).recall(agent, "backups", k=1)
    finally:
        await _forget_agent(sessionmaker, moved)


async def test_a_killed_cli_reindex_continues_where_it_stopped(
    sessionmaker: async_sessionmaker[DbSession],
    agent: str,
    database_url: str,
    stack: Stack,
    tmp_path: Path,
) -> None:
    store = MemoryStore(sessionmaker, OLD)
    count = 400
    for n in range(count):
        added = await store.add(agent, f"note {n} {uuid.uuid4().hex} {uuid.uuid4().hex}")
        assert added.action == "inserted"
    vigil = Vigil(
        cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue="unused",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp_path,
        )
    )
    args = ("memory", "reindex", "--agent", agent, "--embedder", "hashing", "--dim", "256")
    proc = vigil.popen(*args, "--batch-size", "1", "--json")
    assert proc.stdout is not None
    # A small pipe: the reindex can run only a few batches ahead of what is read here.
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, 4096)
    try:
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            if json.loads(line)["done"] >= 5:
                break
    finally:
        proc.kill()
        proc.communicate()
    at_kill = len(await _side_rows(sessionmaker, agent))
    assert 5 <= at_kill < count
    # Still on the old vectors: the switch had not happened.
    assert (await store.recall(agent, "note 7", k=1, mode="vector"))[0].similarity is not None

    done = vigil.ok(*args, "--json")
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["state"] == "active" and last["embedder"] == "hashing-256"
    assert last["resumed"] == at_kill and last["done"] == last["total"] == count
    assert await _side_rows(sessionmaker, agent) == []
    async with sessionmaker() as db:
        rows = (
            await db.execute(
                text("SELECT embedder, count(*) FROM memories WHERE agent_id = :a GROUP BY 1"),
                {"a": agent},
            )
        ).all()
    assert [tuple(r) for r in rows] == [("hashing-256", count)]
    # Plain lines to a pipe, and a second run has nothing to do.
    again = vigil.ok(*args)
    assert f"agent {agent} recalls with hashing-256" in again.stdout
    assert "VIGIL_EMBEDDER=hashing VIGIL_EMBEDDING_DIM=256" in again.stdout


async def test_a_worker_configured_with_another_embedder_does_not_start(
    sessionmaker: async_sessionmaker[DbSession],
    agent: str,
    database_url: str,
    stack: Stack,
    tmp_path: Path,
) -> None:
    await MemoryStore(sessionmaker, OLD).add(agent, "the release train leaves on Thursdays")
    vigil = Vigil(
        cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=f"tq-{uuid.uuid4()}",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp_path,
        )
    )
    done = vigil("worker", env={"VIGIL_EMBEDDER": "hashing", "VIGIL_EMBEDDING_DIM": "200"})
    assert done.returncode == 2, done.stderr[-2000:]
    said = " ".join(done.stderr.split())
    assert "worker could not start" in said and "no agent's memories come from it" in said
    assert "--embedder hashing --dim 200" in said
    searched = vigil(
        "memory", "search", "release train", "--agent", agent,
        env={"VIGIL_EMBEDDER": "hashing", "VIGIL_EMBEDDING_DIM": "256"},
    )  # fmt: skip
    assert searched.returncode == 2
    assert "hashing-384" in " ".join(searched.stderr.split())


async def test_a_session_of_an_agent_on_another_embedder_recalls_by_full_text(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    agent: str,
) -> None:
    """The agent's memories come from another embedder than the worker's (a reindex rolled
    out agent by agent): its sessions stalled at step 0, each model call failing on the
    context's recall and tried again without end. Full-text recall goes on: the session
    takes its steps, and the memory reaches the model."""
    # Another agent's memory from the worker's own embedder: it is not a plain change of
    # settings, so the worker starts.
    kept = f"{agent}-kept"
    await MemoryStore(sessionmaker, OLD).add(kept, "reports go out on Mondays")
    await MemoryStore(sessionmaker, NEW).add(agent, "backups run at night on the tape robot")
    stub.enqueue(Reply.tool_call("finish", {"summary": "backups: at night"}))
    try:
        async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
            handle = await start(
                client, task_queue, session_input("when do backups run", agent_id=agent)
            )
            result = await asyncio.wait_for(handle.result(), 60)
    finally:
        await _forget_agent(sessionmaker, kept)
    assert result.status == SessionStatus.COMPLETED, result
    assert "tape robot" in json.dumps(stub.requests[0].body), stub.requests[0].body
