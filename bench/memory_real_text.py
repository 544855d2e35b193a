"""Memory recall on real text: recall@10 by ef_search, latency of each recall mode, and
what each half of the hybrid contributes.

Prints figures; asserts nothing about time. The corpus is ``bench.real_text_corpus``: real
prose sentences from the docstrings and comments of the standard library and the installed packages,
embedded once with the bundled all-MiniLM-L6-v2 model and cached (the first run embeds,
later runs load the cache in seconds). ``--queries`` sentences drawn from the whole
corpus (seeded) are held out as queries (never inserted); for each size N the first N
others are loaded with ``bench.memory_recall.load`` (COPY into a fresh database migrated
by vigil's migrations, recorded as made by ``local:all-MiniLM-L6-v2``, both indexes
rebuilt with the migration's definitions). Everything below then goes through
``MemoryStore`` as shipped, acting as the agent (role ``vigil_agent``, row-level security
on):

- recall@10 of the HNSW index against exact nearest neighbours (numpy) at ef_search
  40 / 80 / 160 / 320 and at the default (``ef_search_for``, which follows the agent's
  memory count), with the median latency of that vector search;
- p50/p99 of ``recall`` (k=10) in each mode: ``hybrid`` (the default: both halves at
  once, on two connections), ``vector``, ``text``, hybrid with its halves one after
  the other (``concurrent_halves=0``) and full text running every step of its ladder
  (``text_statistics=False``), with the ladder steps sent per query both ways (the
  search stops at the first step that completes its candidates). Each mode runs
  ``--passes`` passes over the queries (2 by default) and reports the last; the hybrid's
  first pass, when the pages a query reads may not be in PostgreSQL's cache yet (the
  modes run one after another, so the hybrid goes first), is printed beside it. The
  bench's own objects (the corpus) are frozen out of Python's collector before measuring
  (``--no-gc-freeze`` leaves them in: its passes over them then land in the timings);
- the share of the hybrid's results found by the vector half only, by the full-text half
  only, and by both.

    uv run python -m bench.memory_real_text                         # on the dev stack
    uv run python -m bench.memory_real_text --sizes 20000,max --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.memory_recall import AGENT, PresetEmbedder, drop, load, percentiles, recreate
from bench.real_text_corpus import embeddings, sentences
from vigil.activities.memory.store import MemoryStore, RecallMode, ef_search_for
from vigil.workers.db import WORKER_PING_AFTER_IDLE_SECONDS, make_engine, make_sessionmaker
from vigil.workers.settings import Settings

EMBEDDER = "local:all-MiniLM-L6-v2"
"""The identity the bundled model records (``LocalMiniLMEmbedder``); the corpus vectors
are that model's output, so the store compares them as the shipped embedder would."""
EF_VALUES = (40, 80, 160, 320)
MODES: tuple[RecallMode, ...] = ("hybrid", "vector", "text")
IN_TURN = "hybrid in turn"
"""Hybrid recall with its halves one after the other on one connection
(``concurrent_halves=0``), measured beside the default, which runs them at once."""
EVERY_STEP = "text every step"
"""Full-text recall running every step of its ladder (``text_statistics=False``),
measured beside the default, which skips the steps the word statistics rule out."""


@dataclass
class Point:
    size: int
    load_s: float
    gin_s: float
    hnsw_s: float
    default_ef: int
    recall: dict[str, float] = field(default_factory=dict)
    """recall@k by ef label (``40`` ... ``default``)."""
    nearest_ms: dict[str, float] = field(default_factory=dict)
    """Median latency of the HNSW search by ef label."""
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)
    """p50/p99 of recall by mode, in the last pass over the queries."""
    first_pass: dict[str, tuple[float, float]] = field(default_factory=dict)
    """The same in the first pass, when the pages each query reads may not be cached yet."""
    share: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Hybrid results found by the vector half only, the text half only, both."""
    steps: tuple[float, float] = (0.0, 0.0)
    """Full-text ladder steps sent per query: as shipped (statistics on), and every step."""
    text_empty: float = 0.0
    """Share of queries whose full-text half found nothing."""
    load: str = ""


def exact_neighbours(queries: np.ndarray, vectors: np.ndarray, k: int) -> list[set[int]]:
    """Ids (1..N in load order) of each query's ``k`` nearest by cosine, exactly."""
    out: list[set[int]] = []
    for chunk in np.array_split(queries, max(1, len(queries) // 50)):
        scores = chunk @ vectors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k] + 1
        out.extend(set(row.tolist()) for row in top)
    return out


async def measure(
    url: str,
    size: int,
    vectors: np.ndarray,
    queries: list[str],
    qvec: np.ndarray,
    k: int,
    passes: int = 2,
    freeze: bool = True,
) -> Point:
    preset = {t: v.tolist() for t, v in zip(queries, qvec, strict=True)}
    # As the worker makes it (recall runs in its activities): pinged only after 1 s idle.
    engine = make_engine(url, pool_size=2, ping_after_idle=WORKER_PING_AFTER_IDLE_SECONDS)
    sessionmaker = make_sessionmaker(engine)
    store = MemoryStore(sessionmaker, PresetEmbedder(preset, name=EMBEDDER))
    in_turn = MemoryStore(sessionmaker, PresetEmbedder(preset, name=EMBEDDER), concurrent_halves=0)
    every_step = MemoryStore(
        sessionmaker, PresetEmbedder(preset, name=EMBEDDER), text_statistics=False
    )
    point = Point(size, 0.0, 0.0, 0.0, ef_search_for(size, max(40, 2 * k)))
    if freeze:
        # The corpus (its sentences, their vectors, the queries) is this bench's, not
        # vigil's: kept out of the collector, whose passes over it otherwise land in the
        # timed recalls.
        gc.collect()
        gc.freeze()
    try:
        truth = exact_neighbours(qvec, vectors, k)
        for label, ef in [*((str(e), e) for e in EF_VALUES), ("default", None)]:
            for v in qvec[:10]:  # warm the index pages and the pool
                await store.nearest(AGENT, v.tolist(), k=k, ef_search=ef)
            hits = 0
            samples = []
            for v, true_ids in zip(qvec, truth, strict=True):
                started = time.perf_counter()
                found = await store.nearest(AGENT, v.tolist(), k=k, ef_search=ef)
                samples.append((time.perf_counter() - started) * 1000)
                hits += len({i for i, _ in found} & true_ids)
            point.recall[label] = hits / (k * len(qvec))
            point.nearest_ms[label] = statistics.median(samples)

        only_vector = only_text = both = total = empty = 0
        runs: list[tuple[str, MemoryStore, RecallMode]] = [
            *((mode, store, mode) for mode in MODES),
            (IN_TURN, in_turn, "hybrid"),
            (EVERY_STEP, every_step, "text"),
        ]
        for label, by, mode in runs:
            for q in queries[:10]:
                await by.recall(AGENT, q, k=k, mode=mode)
            samples = await _one_pass(by, queries, k, mode)
            point.first_pass[label] = percentiles([ms for ms, _ in samples])
            for _ in range(passes - 1):
                samples = await _one_pass(by, queries, k, mode)
            point.latency[label] = percentiles([ms for ms, _ in samples])
            for _, got in samples:
                if label == "hybrid":
                    total += len(got)
                    for r in got:
                        if r.vector_rank is not None and r.text_rank is not None:
                            both += 1
                        elif r.vector_rank is not None:
                            only_vector += 1
                        else:
                            only_text += 1
                if label == "text" and not got:
                    empty += 1
        point.share = (only_vector / total, only_text / total, both / total)
        # Text recalls ran passes * len(queries) + 10 times in each of the two stores.
        runs_per_store = passes * len(queries) + 10
        point.steps = (
            store.text_steps["sent"] / (2 * runs_per_store),
            every_step.text_steps["sent"] / runs_per_store,
        )
        point.text_empty = empty / len(queries)
    finally:
        await engine.dispose()
    return point


async def _one_pass(
    store: MemoryStore, queries: list[str], k: int, mode: RecallMode
) -> list[tuple[float, list[Any]]]:
    """(ms, results) of each query's recall, in order."""
    out = []
    for q in queries:
        started = time.perf_counter()
        got = await store.recall(AGENT, q, k=k, mode=mode)
        out.append(((time.perf_counter() - started) * 1000, got))
    return out


async def run(args: argparse.Namespace) -> None:
    server_url = args.database_url or Settings().endpoints().database_url
    if not server_url:
        sys.exit("no database: pass --database-url or start the stack (vigil stack up)")
    pool = sentences(10**7)
    if len(pool) <= args.queries:
        sys.exit(f"the corpus has {len(pool)} sentences: too few for {args.queries} queries")
    print(f"corpus: {len(pool):,} sentences; loading their embeddings ...", flush=True)
    started = time.perf_counter()
    vectors = embeddings(pool)
    print(f"  ready in {time.perf_counter() - started:.1f}s", flush=True)
    # Queries are drawn from the whole corpus (both of its parts); the rest, in order, is
    # what each size loads a prefix of.
    held = np.zeros(len(pool), dtype=bool)
    held[random.Random(args.seed).sample(range(len(pool)), args.queries)] = True
    queries, qvec = [t for t, h in zip(pool, held, strict=True) if h], vectors[held]
    corpus, cvec = [t for t, h in zip(pool, held, strict=True) if not h], vectors[~held]
    sizes = [len(corpus) if s == "max" else min(int(s), len(corpus)) for s in args.sizes]
    points: list[Point] = []
    for size in sizes:
        print(f"N={size:,}: loading ...", flush=True)
        url = await recreate(server_url, args.database_name)
        rng = np.random.default_rng(args.seed)
        load_s, gin_s, hnsw_s, _ = await load(
            url, cvec[:size], corpus[:size], rng, args.maintenance_work_mem, embedder=EMBEDDER
        )
        print(
            f"  COPY {load_s:.1f}s, GIN {gin_s:.1f}s, HNSW {hnsw_s:.1f}s; measuring ...",
            flush=True,
        )
        point = await measure(
            url, size, cvec[:size], queries, qvec, args.k, args.passes, not args.no_gc_freeze
        )
        point.load_s, point.gin_s, point.hnsw_s = load_s, gin_s, hnsw_s
        point.load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        points.append(point)
        if not args.keep:
            await drop(server_url, args.database_name)
    print_table(points, args)


def print_table(points: list[Point], args: argparse.Namespace) -> None:
    k = args.k
    print()
    print(
        f"memory recall on real text (source sentences, all-MiniLM-L6-v2), k={k}, "
        f"{args.queries} held-out queries, one agent, as the agent (RLS on)"
    )
    labels = [*(str(e) for e in EF_VALUES), "default"]
    header = f"{'N':>8} " + " ".join(f"{'ef ' + lab:>16}" for lab in labels)
    print(f"recall@{k} of the HNSW index vs exact / median ms of that search")
    print(header)
    print("-" * len(header))
    for p in points:
        cells = " ".join(f"{p.recall[lab]:>8.3f}/{p.nearest_ms[lab]:<7.1f}" for lab in labels)
        print(f"{p.size:>8,} {cells}   (default ef = {p.default_ef})")
    print()
    print(
        f"recall latency in ms, p50/p99 (pass {args.passes} over the queries; 'hybrid 1st': "
        "the hybrid's first pass); hybrid results found by vector only/text only/both"
    )
    header = (
        f"{'N':>8} {'hybrid':>15} {'vector':>15} {'text':>15} {'in turn':>15} "
        f"{'every step':>15} {'hybrid 1st':>15} {'steps':>9} {'v only':>7} "
        f"{'t only':>7} "
        f"{'both':>6} {'no text':>8} {'COPY s':>7} {'GIN s':>6} {'HNSW s':>7}  load avg"
    )
    print(header)
    print("-" * len(header))
    for p in points:
        lat = " ".join(
            f"{p.latency[m][0]:>7.1f}/{p.latency[m][1]:<7.1f}"
            for m in (*MODES, IN_TURN, EVERY_STEP)
        )
        first = p.first_pass["hybrid"]
        lat += f" {first[0]:>7.1f}/{first[1]:<7.1f}"
        print(
            f"{p.size:>8,} {lat} {p.steps[0]:>4.2f}/{p.steps[1]:<4.2f} "
            f"{p.share[0]:>7.2f} {p.share[1]:>7.2f} {p.share[2]:>6.2f} "
            f"{p.text_empty:>8.2f} {p.load_s:>7.1f} {p.gin_s:>6.1f} {p.hnsw_s:>7.1f}  {p.load}"
        )
    print(
        "('in turn': hybrid with its halves one after the other; 'every step': text recall "
        "running every ladder step; 'steps': ladder steps sent per query, default/every "
        "step; 'no text': share of queries whose full-text half found nothing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: s.split(","),
        default=["20000", "max"],
        help="comma-separated table sizes, 'max' for the whole corpus (default 20000,max)",
    )
    parser.add_argument("--database-url", help="server to use (default: the vigil stack's)")
    parser.add_argument("--database-name", default="vigil_bench_memory_text")
    parser.add_argument("--queries", type=int, default=500, help="held-out query sentences")
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--passes",
        type=int,
        default=2,
        help="passes over the queries per mode; the last is reported, the first beside it",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave the corpus's objects to Python's collector while measuring",
    )
    args = parser.parse_args()
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
