"""Long-term memory at scale: bulk load, index builds, recall latency and HNSW recall@10.

Prints figures; asserts nothing about time. For each size N it recreates its own
database (``vigil_bench_memory`` by default) on the given server, migrates it, and loads
N synthetic 384-d memories for one agent with COPY: unit vectors around N/100 cluster
centres, and texts of Zipf-distributed pseudo-words that share topic words per cluster.
The two memory indexes (HNSW, GIN) are dropped before the load and rebuilt after it
with their definitions from the migration, and the builds are timed. Then, through
``MemoryStore`` as the agent (row-level security on), it measures:

- recall latency p50/p99 over the queries (k=10) for ``hybrid`` with plain queries
  matching ``any`` word in full text (the default), ``hybrid`` matching ``all`` words,
  and ``vector`` only;
- recall@10 of the HNSW index (``ef_search = 40``) against exact nearest neighbours
  computed in numpy, and the latency of the exact scan in SQL for comparison;
- ``add`` latency: the write pipeline on the full table, for plain facts (near-duplicate
  search) and for facts about a subject (its live versions are compared, then superseded).

    uv run python -m bench.memory_recall                          # 100k on the dev stack
    uv run python -m bench.memory_recall --sizes 100000,1000000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from vigil.activities.memory.store import MemoryStore, RecallMode
from vigil.workers.db import (
    WORKER_PING_AFTER_IDLE_SECONDS,
    make_engine,
    make_sessionmaker,
    migrate_sync,
)
from vigil.workers.settings import Settings, asyncpg_dsn

DIM = 384
AGENT = "agent-bench-memory"
HNSW_INDEX = "ix_memories_embedding_384"
GIN_INDEX = "ix_memories_tsv"
VOCABULARY = 20_000
STOPWORDS = 100
"""The most frequent ranks of the Zipf law are stop words: never written, as if removed."""
WORDS_PER_MEMORY = 12
SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]


class PresetEmbedder:
    """Embeds the benchmark's query texts into the vectors prepared for them."""

    version = "1"

    def __init__(self, vectors: dict[str, list[float]], name: str = "bench-preset") -> None:
        self.dim = DIM
        self.name = name
        """The embedder recorded with the loaded rows (``load``): recall compares only
        vectors of the agent's active embedder."""
        self._vectors = vectors

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._vectors[t] for t in texts]

    async def aclose(self) -> None:
        return None


@dataclass
class Row:
    size: int
    load_s: float
    gin_s: float
    hnsw_s: float
    hnsw_workers: int
    hybrid: tuple[float, float]
    hybrid_all: tuple[float, float]
    vector: tuple[float, float]
    exact_sql_ms: float
    recall_at_10: float
    add: tuple[float, float]
    add_subject: tuple[float, float]
    searches: str


def words(rng: np.random.Generator) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < VOCABULARY:
        word = "".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


def synthesise(
    n: int, vocab_words: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Unit vectors around cluster centres, cluster of each, topic words of each cluster,
    and the texts."""
    clusters = max(1, n // 100)
    centres = rng.standard_normal((clusters, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    assignment = rng.integers(0, clusters, size=n)
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        chunk = centres[assignment[start:stop]] + 0.06 * rng.standard_normal(
            (stop - start, DIM), dtype=np.float32
        )
        vectors[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    vocab = np.array(vocab_words)
    topics = rng.integers(0, VOCABULARY, size=(clusters, 3))
    # Zipf-distributed filler (exponent 1.1) as in natural text once stop words are gone:
    # the commonest content words are in about 1% of memories, most words are rare.
    ranks = np.arange(STOPWORDS, STOPWORDS + VOCABULARY, dtype=np.float64)
    weights = ranks**-1.1
    filler = rng.choice(VOCABULARY, size=(n, WORDS_PER_MEMORY), p=weights / weights.sum())
    texts = []
    for i in range(n):
        topic = vocab[topics[assignment[i]]]
        texts.append(" ".join([*topic[: 1 + i % 3], *vocab[filler[i]]]))
    return vectors, assignment, topics, texts


async def recreate(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(asyncpg_dsn(server_url.rsplit("/", 1)[0] + "/postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = server_url.rsplit("/", 1)[0] + "/" + name
    await asyncio.to_thread(migrate_sync, url)
    return url


async def load(
    url: str,
    vectors: np.ndarray,
    texts: list[str],
    rng: np.random.Generator,
    maintenance_work_mem: str,
    embedder: str = "bench-preset",
) -> tuple[float, float, float, int]:
    """COPY the rows in, recorded as made by ``embedder`` (version 1, the agent's active
    one), then rebuild both indexes; returns the three durations and the HNSW workers."""
    n = len(texts)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await register_vector(conn)
        definitions = dict(
            await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY($1)",
                [HNSW_INDEX, GIN_INDEX],
            )
        )
        await conn.execute(f"DROP INDEX {HNSW_INDEX}, {GIN_INDEX}")
        now = datetime.now(UTC)
        ages = rng.uniform(0, 365, size=n)
        importance = rng.uniform(0, 1, size=n)
        started = time.perf_counter()
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            records = [
                (
                    i + 1, AGENT, "fact", None, texts[i], float(importance[i]), DIM,
                    vectors[i], now - timedelta(days=float(ages[i])), embedder, "1",
                )
                for i in range(start, stop)
            ]  # fmt: skip
            await conn.copy_records_to_table(
                "memories",
                records=records,
                columns=[
                    "id", "agent_id", "kind", "subject", "content", "importance", "dim",
                    "embedding", "created_at", "embedder", "embedder_version",
                ],
            )  # fmt: skip
        await conn.execute("SELECT setval('memories_id_seq', $1)", n)
        await conn.execute(
            "INSERT INTO memory_embedders (agent_id, embedder, version, dim, state, total, "
            "done, activated_at) VALUES ($1, $2, '1', $3, 'active', $4, $4, now())",
            AGENT,
            embedder,
            DIM,
            n,
        )
        load_s = time.perf_counter() - started

        await conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        # pgvector says when the graph outgrows maintenance_work_mem (the build slows).
        conn.add_log_listener(lambda _c, message: print(f"  server: {message.message}"))
        started = time.perf_counter()
        await conn.execute(definitions[GIN_INDEX])
        gin_s = time.perf_counter() - started

        workers = 1
        await conn.execute(f"SET max_parallel_maintenance_workers = {workers}")
        started = time.perf_counter()
        try:
            await conn.execute(definitions[HNSW_INDEX])
        except asyncpg.PostgresError as exc:
            # A parallel build needs shared memory the host may not grant; build serially.
            print(f"  parallel HNSW build failed ({exc}); building serially", flush=True)
            workers = 0
            await conn.execute("SET max_parallel_maintenance_workers = 0")
            started = time.perf_counter()
            await conn.execute(definitions[HNSW_INDEX])
        hnsw_s = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE memories")
    finally:
        await conn.close()
    return load_s, gin_s, hnsw_s, workers


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


async def measure(
    url: str,
    size: int,
    vectors: np.ndarray,
    assignment: np.ndarray,
    topics: np.ndarray,
    vocab_words: list[str],
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> tuple[
    dict[str, tuple[float, float]], float, float, tuple[float, float], tuple[float, float], str
]:
    # Queries: a point near a random memory, with its cluster's topic words and one more.
    picks = rng.integers(0, size, size=args.queries)
    noisy = vectors[picks] + 0.03 * rng.standard_normal((args.queries, DIM), dtype=np.float32)
    queries = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    texts = [
        f"{' '.join(vocab_words[w] for w in topics[assignment[p]][:2])} "
        f"{vocab_words[int(rng.integers(0, 200))]} q{i}"
        for i, p in enumerate(picks)
    ]
    preset = {t: q.tolist() for t, q in zip(texts, queries, strict=True)}
    # As the worker makes it (recall runs in its activities): pinged only after 1 s idle.
    engine = make_engine(url, pool_size=2, ping_after_idle=WORKER_PING_AFTER_IDLE_SECONDS)
    sessionmaker = make_sessionmaker(engine)
    store = MemoryStore(sessionmaker, PresetEmbedder(preset))
    store_all = MemoryStore(sessionmaker, PresetEmbedder(preset), text_match="all")
    try:
        latency: dict[str, tuple[float, float]] = {}
        runs: list[tuple[str, MemoryStore, RecallMode]] = [
            ("hybrid", store, "hybrid"),
            ("hybrid_all", store_all, "hybrid"),
            ("vector", store, "vector"),
        ]
        for label, which, mode in runs:
            for text in texts[:10]:  # warm the caches and the connection pool
                await which.recall(AGENT, text, k=args.k, mode=mode)
            samples = []
            for text in texts:
                started = time.perf_counter()
                await which.recall(AGENT, text, k=args.k, mode=mode)
                samples.append((time.perf_counter() - started) * 1000)
            latency[label] = percentiles(samples)

        # recall@10 of the index alone against exact neighbours from numpy.
        exact = np.concatenate(
            [
                np.argpartition(-(chunk @ vectors.T), args.k, axis=1)[:, : args.k] + 1
                for chunk in np.array_split(queries, max(1, len(queries) // 20))
            ]
        )  # ids are 1..N in load order
        hits = 0
        for q, truth in zip(queries, exact, strict=True):
            found = await store.nearest(AGENT, q.tolist(), k=args.k)
            hits += len({i for i, _ in found} & set(truth.tolist()))
        recall_at_k = hits / (args.k * len(queries))

        exact_samples = []
        for q in queries[: args.exact_queries]:
            started = time.perf_counter()
            await store.nearest(AGENT, q.tolist(), k=args.k, exact=True)
            exact_samples.append((time.perf_counter() - started) * 1000)
        exact_ms = statistics.median(exact_samples)

        # The write pipeline on the full table: plain facts (near-duplicate search through
        # the index) and facts about a subject (the subject's versions, then supersede).
        add_samples: dict[bool, list[float]] = {False: [], True: []}
        for i in range(2 * args.adds):
            text = f"bench fact {uuid.uuid4().hex} {vocab_words[i % 100]}"
            preset[text] = queries[i % len(queries)].tolist()
            with_subject = bool(i % 2)
            started = time.perf_counter()
            await store.add(AGENT, text, subject=f"bench-{i % 5}" if with_subject else None)
            add_samples[with_subject].append((time.perf_counter() - started) * 1000)
        add = percentiles(add_samples[False])
        add_subject = percentiles(add_samples[True])
        searches = ", ".join(f"{k}={v}" for k, v in sorted(store.vector_searches.items()))
    finally:
        await engine.dispose()
    return latency, recall_at_k, exact_ms, add, add_subject, searches


async def run(args: argparse.Namespace) -> None:
    server_url = args.database_url or Settings().endpoints().database_url
    if not server_url:
        sys.exit("no database: pass --database-url or start the stack (vigil stack up)")
    rows: list[Row] = []
    for size in args.sizes:
        print(f"N={size:,}: generating ...", flush=True)
        rng = np.random.default_rng(args.seed)
        started = time.perf_counter()
        vocab_words = words(rng)
        vectors, assignment, topics, texts = synthesise(size, vocab_words, rng)
        print(f"  generated in {time.perf_counter() - started:.1f}s; loading ...", flush=True)
        url = await recreate(server_url, args.database_name)
        load_s, gin_s, hnsw_s, workers = await load(
            url, vectors, texts, rng, args.maintenance_work_mem
        )
        del texts
        print(
            f"  COPY {load_s:.1f}s, GIN {gin_s:.1f}s, HNSW {hnsw_s:.1f}s; measuring ...",
            flush=True,
        )
        latency, recall_at_k, exact_ms, add, add_subject, searches = await measure(
            url, size, vectors, assignment, topics, vocab_words, args, rng
        )
        rows.append(
            Row(
                size, load_s, gin_s, hnsw_s, workers, latency["hybrid"], latency["hybrid_all"],
                latency["vector"], exact_ms, recall_at_k, add, add_subject, searches,
            )
        )  # fmt: skip
        if not args.keep:
            await drop(server_url, args.database_name)
    print_table(rows, args)


async def drop(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url.rsplit("/", 1)[0] + "/postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pair(values: tuple[float, float]) -> str:
    return f"{values[0]:>6.1f}/{values[1]:<6.1f}"


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print()
    print(
        f"memory recall, k={args.k}, {args.queries} queries, dim {DIM}, one agent; "
        "latency in ms, p50/p99"
    )
    header = (
        f"{'N':>10} {'COPY s':>7} {'GIN s':>6} {'HNSW s':>7} {'hybrid any':>13} "
        f"{'hybrid all':>13} {'vector':>13} {'exact SQL':>9} {'recall@10':>9} {'add':>13} "
        f"{'add subject':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.size:>10,} {r.load_s:>7.1f} {r.gin_s:>6.1f} {r.hnsw_s:>7.1f} "
            f"{pair(r.hybrid)} {pair(r.hybrid_all)} {pair(r.vector)} "
            f"{r.exact_sql_ms:>9.1f} {r.recall_at_10:>9.3f} {pair(r.add)} {pair(r.add_subject)}"
        )
    for r in rows:
        print(
            f"N={r.size:,}: HNSW built with {r.hnsw_workers} parallel worker(s); "
            f"vector searches: {r.searches}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100_000],
        help="comma-separated table sizes (default 100000)",
    )
    parser.add_argument("--database-url", help="server to use (default: the vigil stack's)")
    parser.add_argument("--database-name", default="vigil_bench_memory")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--adds", type=int, default=50, help="adds of each sort")
    parser.add_argument("--maintenance-work-mem", default="2GB")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
