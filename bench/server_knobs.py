"""Which dev-server and worker knobs move the Temporal floor (bench/floor.py), one by one.

Starts a throw-away ``temporal server start-dev`` per variant (own ports, own SQLite file
in a temporary folder; the embedded stack's tuning plus or minus one knob), measures the
floor on it with workers built like vigil's, stops it. Variants run in rounds, so a burst
of load on a shared machine hits all of them alike. Prints a table per round and medians.

    uv run python -m bench.server_knobs --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.floor import Floor, measure, table
from vigil.workers.settings import Settings
from vigil.workers.stack.services import DEV_SERVER_TUNING, TemporalDevServer
from vigil.workers.temporal import connect

BASE_PORT = 27233 + int(os.environ.get("VIGIL_TEST_PORT_OFFSET", "0"))


def dyn(key_value: str) -> tuple[str, ...]:
    return ("--dynamic-config-value", key_value)


def pragma(key_value: str) -> tuple[str, ...]:
    return ("--sqlite-pragma", key_value)


@dataclass
class Variant:
    name: str
    tuning: tuple[str, ...]
    persist: bool = True
    eager_start: bool = False
    worker: dict[str, int] = field(default_factory=dict)
    """``worker_*`` settings for the bench's workers."""


def without(tuning: tuple[str, ...], word: str) -> tuple[str, ...]:
    """``tuning`` less the flag-value pairs whose value holds ``word``."""
    pairs = zip(tuning[::2], tuning[1::2], strict=True)
    return tuple(part for flag, value in pairs if word not in value for part in (flag, value))


PARTITIONS = (
    *dyn("matching.numTaskqueueReadPartitions=1"),
    *dyn("matching.numTaskqueueWritePartitions=1"),
)
WAL = (*pragma("journal_mode=wal"), *pragma("synchronous=normal"))
EAGER_START = dyn("system.enableEagerWorkflowStart=true")
BEFORE_READERS = without(DEV_SERVER_TUNING, "MaxPollRPS")
"""The tuning before the history queues' readers were let load more than 20 times a
second."""
BEFORE = without(without(BEFORE_READERS, "Partitions"), "=wal")
"""The tuning before WAL and one partition: eager activity execution alone."""
BEFORE = without(BEFORE, "synchronous")
POLLERS_20 = {"worker_workflow_pollers": 20, "worker_activity_pollers": 20}

VARIANTS = [
    Variant("before: eager activities only", BEFORE),
    Variant("before, without eager activities", without(BEFORE, "EagerExecution")),
    Variant("before + one task-queue partition", (*BEFORE, *PARTITIONS)),
    Variant("before + SQLite WAL, synchronous=normal", (*BEFORE, *WAL)),
    Variant("eager + WAL + one partition", BEFORE_READERS),
    Variant(
        "shipped: eager + WAL + one partition + queue readers at 1,000 loads/s", DEV_SERVER_TUNING
    ),
    Variant(
        "shipped + eager workflow start",
        (*DEV_SERVER_TUNING, *EAGER_START),
        eager_start=True,
    ),
    Variant("shipped, 20 pollers of each kind", DEV_SERVER_TUNING, worker=POLLERS_20),
    Variant("shipped, in-memory SQLite (reference)", DEV_SERVER_TUNING, persist=False),
]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def floor_on(port: int, variant: Variant, args: argparse.Namespace) -> Floor:
    settings = Settings(  # type: ignore[call-arg]
        temporal_address=f"127.0.0.1:{port}", payload_encryption=False, **variant.worker
    )
    client = await connect(settings)
    return await measure(
        client,
        settings,
        loop=args.loop,
        workflows=args.workflows,
        repeat=1,
        eager_start=variant.eager_start,
    )


def run_variant(variant: Variant, args: argparse.Namespace, cache: Path) -> Floor:
    with tempfile.TemporaryDirectory(prefix="vigil-knobs-") as tmp:
        server = TemporalDevServer(
            Path(tmp), cache, BASE_PORT, BASE_PORT + 1, variant.tuning, variant.persist
        )
        server.start(say)
        try:
            server.wait(say)
            return asyncio.run(floor_on(BASE_PORT, variant, args))
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loop", type=int, default=30)
    parser.add_argument("--workflows", type=int, default=60)
    parser.add_argument("--only", default="", help="comma-separated variant numbers (1-based)")
    args = parser.parse_args(argv)
    chosen = [VARIANTS[int(i) - 1] for i in args.only.split(",")] if args.only else list(VARIANTS)
    cache = Settings().resolved_bin_cache  # type: ignore[call-arg]
    results: dict[str, list[Floor]] = {v.name: [] for v in chosen}
    for round_ in range(1, args.rounds + 1):
        for variant in chosen:
            say(f"round {round_}: {variant.name} ...")
            floor = run_variant(variant, args, cache)
            results[variant.name].append(floor)
            say(f"  {floor.rows()}")
    rows = []
    for name, floors in results.items():
        act = [f.activity_ms for f in floors]
        plain = [f.activity_plain_ms for f in floors]
        local = [f.local_activity_ms for f in floors]
        wfs = [f.one_activity_wf_per_s for f in floors]
        starts = [f.starts_per_s for f in floors]
        rows.append(
            (
                name,
                f"act {statistics.median(act):.0f} ms ({min(act):.0f}-{max(act):.0f}), "
                f"not eager {statistics.median(plain):.0f}, "
                f"local {statistics.median(local):.1f}, "
                f"wf/s {statistics.median(wfs):.1f} ({min(wfs):.1f}-{max(wfs):.1f}), "
                f"starts/s {statistics.median(starts):.0f}",
            )
        )
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
