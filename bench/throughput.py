"""Starts per second and CPU per start: many sessions that each settle asleep.

Each session makes one model call (the LLM stub answers at once with ``wait_until`` a year
away) and goes to sleep: a user with thousands of agents waiting for their next run.
Sessions are started through vigil's client (`VigilClient.start_session`, the path of
`vigil start` and the API) against real `vigil worker` subprocesses, one and then two of
them, on the test stack's Temporal server and PostgreSQL. Measured per case:

- start calls per second, and sessions settled (asleep in the record) per second;
- CPU seconds per session, from /proc: the workers, the Temporal server, PostgreSQL;
- the workers' resident memory per cached (sleeping) session;
- the latency of a wake, with the session cached on the worker and after eviction
  (a worker with ``VIGIL_WORKER_MAX_CACHED_WORKFLOWS=0`` replays the history each time).

The floor (bench/floor.py, same server, same run) is printed first; each case is then set
against a floor of its own, measured right before it: as many one-activity workflows
started at once as the case starts sessions, their rate and their CPU per workflow (this
process, which runs the floor's worker, the Temporal server, PostgreSQL), since the
server's rate moves within minutes on a shared machine and as its database grows. The
ratios printed are the case's over that floor's. ``--mode low-latency`` runs the sessions
with an agent whose model calls (and so its bookkeeping) are local activities.

    uv run python -m bench.throughput --sessions 500
    uv run python -m bench.throughput --sessions 150 --mode low-latency
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client

from bench.floor import floor_worker, one_activity_workflows, table
from bench.floor import measure as measure_floor
from bench.step_modes import MODES, apply_agents
from tests.support.llm_stub import LLMStub, Reply
from tests.support.teststack import scratch_stack
from vigil.schema.payloads import Budget, ToolPolicy
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect

AGENTS = {"default": "agent-throughput", "low-latency": MODES["low-latency"]}
"""Mode -> the agent its sessions run: the default one has no definition, the other is
the step bench's low-latency agent (every built-in tool, model calls as local activities)."""
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def responder(body: Any) -> Reply:
    """Sleep for a year on every call: the session settles after one model call."""
    return Reply.tool_call("wait_until", {"seconds": 365 * 24 * 3600}, usage=(50, 5))


# --- /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mib(pid: int) -> float:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return pages * PAGE / 2**20


def children(ppid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == ppid:
                found.append(int(entry.name))
    return found


def pid_in(path: Path) -> int:
    return int(path.read_text().split()[0])


@dataclass
class Parts:
    workers: list[int]
    temporal: int
    postmaster: int

    @classmethod
    def of(cls, settings: Settings, workers: list[int]) -> Parts:
        state = settings.resolved_state_dir
        return cls(
            workers=workers,
            temporal=pid_in(state / "run" / "temporal.pid"),
            postmaster=pid_in(state / "postgres" / "data" / "postmaster.pid"),
        )

    def cpu(self) -> dict[str, float]:
        postgres = [self.postmaster, *children(self.postmaster)]
        return {
            "workers": sum(cpu_seconds(p) for p in self.workers),
            # This process: the start calls (and the floor's in-process worker).
            "starter": cpu_seconds(os.getpid()),
            "temporal": cpu_seconds(self.temporal),
            "postgres": sum(cpu_seconds(p) for p in postgres),
        }

    def worker_rss(self) -> float:
        return sum(rss_mib(p) for p in self.workers)


# --- the workers ------------------------------------------------------------------------


@contextmanager
def vigil_workers(
    settings: Settings, stub_url: str, task_queue: str, count: int, **options: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "VIGIL_STATE_DIR": str(settings.resolved_state_dir),
        "TEMPORAL_ADDRESS": settings.endpoints().temporal_address,
        "DATABASE_URL": settings.endpoints().database_url or "",
        "VIGIL_ARTIFACT_DIR": str(settings.artifact_dir),
        "VIGIL_MODEL_PROVIDER": "openai",
        "VIGIL_MODEL_BASE_URL": stub_url,
        "VIGIL_MODEL_NAME": "stub-model",
        "VIGIL_RECONCILE_SECONDS": "0",
        "VIGIL_LOG_LEVEL": "WARNING",
        **{f"VIGIL_{k.upper()}": v for k, v in options.items()},
    }
    logs = settings.resolved_state_dir / "logs"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vigil.workers.cli", "worker", "--task-queue", task_queue],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"bench-throughput-worker-{n}.log").open("wb"),
        )
        for n in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def asleep(db: asyncpg.Connection, ids: list[str]) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM sessions WHERE id = ANY($1) AND status = 'sleeping'", ids
    )
    return count


async def wait_asleep(db: asyncpg.Connection, ids: list[str], within: float) -> float:
    """Seconds until every one of ``ids`` is asleep in the record."""
    started = time.perf_counter()
    while await asleep(db, ids) < len(ids):
        if time.perf_counter() - started > within:
            raise RuntimeError(f"only {await asleep(db, ids)} of {len(ids)} asleep in {within}s")
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


async def start_many(
    vigil: VigilClient, task_queue: str, count: int, concurrency: int, tag: str, agent: str
) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            started = await vigil.start_session(
                agent,
                f"throughput {tag} {i}",
                session_id=f"tp-{tag}-{i}-{uuid.uuid4().hex[:8]}",
                budget=Budget(max_steps=50),
                policy=ToolPolicy(require_approval=[]),
                task_queue=task_queue,
                allow_undefined=True,
            )
            return started.id

    return list(await asyncio.gather(*[one(i) for i in range(count)]))


@dataclass
class Case:
    workers: int
    sessions: int
    start_calls_per_s: float
    settled_per_s: float
    cpu_per_session: dict[str, float]
    rss_per_session_kib: float


async def run_case(
    settings: Settings,
    stub_url: str,
    db_url: str,
    *,
    workers: int,
    sessions: int,
    concurrency: int,
    options: dict[str, str],
    agent: str,
) -> Case:
    task_queue = f"bench-tp-{uuid.uuid4()}"
    db = await asyncpg.connect(db_url)
    vigil = await VigilClient.connect(settings)
    try:
        with vigil_workers(settings, stub_url, task_queue, workers, **options) as procs:
            parts = Parts.of(settings, [p.pid for p in procs])
            # Warm-up: every worker has polled and run a session before the clock starts.
            warm = await start_many(vigil, task_queue, 4 * workers, concurrency, "warm", agent)
            await wait_asleep(db, warm, 120)
            rss0, cpu0 = parts.worker_rss(), parts.cpu()
            started = time.perf_counter()
            ids = await start_many(vigil, task_queue, sessions, concurrency, "run", agent)
            calls = time.perf_counter() - started
            await wait_asleep(db, ids, 60 + sessions)
            settled = time.perf_counter() - started
            cpu1, rss1 = parts.cpu(), parts.worker_rss()
    finally:
        await vigil.close()
        await db.close()
    return Case(
        workers=workers,
        sessions=sessions,
        start_calls_per_s=sessions / calls,
        settled_per_s=sessions / settled,
        cpu_per_session={k: (cpu1[k] - cpu0[k]) / sessions for k in cpu0},
        rss_per_session_kib=(rss1 - rss0) * 1024 / sessions,
    )


async def wake_latency(
    settings: Settings,
    stub_url: str,
    db_url: str,
    *,
    wakes: int,
    options: dict[str, str],
    agent: str,
) -> list[float]:
    """ms from a wake until the session is asleep again one step later, one at a time."""
    task_queue = f"bench-wake-{uuid.uuid4()}"
    db = await asyncpg.connect(db_url)
    vigil = await VigilClient.connect(settings)
    out: list[float] = []
    try:
        with vigil_workers(settings, stub_url, task_queue, 1, **options):
            ids = await start_many(vigil, task_queue, wakes + 2, 8, "wake", agent)
            await wait_asleep(db, ids, 120)
            for sid in ids:
                started = time.perf_counter()
                await vigil.wake(sid, by="bench", wait=False)
                while True:
                    row = await db.fetchrow("SELECT step, status FROM sessions WHERE id = $1", sid)
                    if row is not None and row["step"] >= 2 and row["status"] == "sleeping":
                        break
                    await asyncio.sleep(0.005)
                out.append((time.perf_counter() - started) * 1000)
    finally:
        await vigil.close()
        await db.close()
    return out[2:]  # the first wakes warm the worker up


@dataclass
class FloorCase:
    """One-activity workflows on the same server right before a case: the machine's
    state moves within minutes here, so each case is set against its own floor."""

    wf_per_s: float
    cpu_per_wf: dict[str, float]


async def floor_case(client: Client, settings: Settings, count: int) -> FloorCase:
    """``count`` one-activity workflows at once on a worker in this process (built like
    vigil's), with the CPU each cost this process, the Temporal server and PostgreSQL."""
    parts = Parts.of(settings, [])
    async with floor_worker(client, settings) as queue:
        cpu0 = parts.cpu()
        done, _ = await one_activity_workflows(client, queue, count)
        cpu1 = parts.cpu()
    return FloorCase(done, {k: (cpu1[k] - cpu0[k]) / count for k in cpu0})


def cpu_text(cpu: dict[str, float]) -> str:
    return (
        f"{sum(cpu.values()) * 1000:.0f} = {cpu['workers'] * 1000:.0f} + "
        f"{cpu['starter'] * 1000:.0f} + {cpu['temporal'] * 1000:.0f} + "
        f"{cpu['postgres'] * 1000:.0f}"
    )


CPU_PARTS = "(workers + this process + Temporal + PostgreSQL)"


def case_rows(case: Case, floor: FloorCase) -> list[tuple[str, str]]:
    cpu = case.cpu_per_session
    label = f"{case.sessions} sessions, {case.workers} worker{'s' if case.workers > 1 else ''}"
    ratio = sum(cpu.values()) / sum(floor.cpu_per_wf.values())
    return [
        (f"{label}: its floor, one-activity workflows/s just before", f"{floor.wf_per_s:.1f}"),
        (f"{label}: its floor, CPU ms/workflow {CPU_PARTS}", cpu_text(floor.cpu_per_wf)),
        (f"{label}: start calls/s", f"{case.start_calls_per_s:.1f}"),
        (
            f"{label}: sessions settled asleep/s",
            f"{case.settled_per_s:.1f} "
            f"({case.settled_per_s / floor.wf_per_s:.2f}x its floor's workflows/s)",
        ),
        (f"{label}: CPU ms/session {CPU_PARTS}", f"{cpu_text(cpu)} ({ratio:.2f}x its floor's)"),
        (f"{label}: worker RSS per cached session, KiB", f"{case.rss_per_session_kib:.0f}"),
    ]


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    db_url = settings.endpoints().database_url or ""
    rows: list[tuple[str, str]] = []

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    options: dict[str, str] = {}
    if args.workflow_pollers:
        options["worker_workflow_pollers"] = str(args.workflow_pollers)
    if args.activity_pollers:
        options["worker_activity_pollers"] = str(args.activity_pollers)
    if args.workflow_tasks:
        options["worker_max_concurrent_workflow_tasks"] = str(args.workflow_tasks)
    agent = AGENTS[args.mode]
    if args.mode == "low-latency":
        await apply_agents(settings)
    with LLMStub(record=False) as stub:
        stub.default = responder
        say("(floor) one-activity workflows/s on the same server ...")
        client = await connect(settings)
        floor = await measure_floor(client, settings, workflows=100, repeat=args.repeat)
        rows += floor.rows()
        say(table(floor.rows()))
        for workers in args.workers:
            for n in range(args.repeat):
                say(f"(floor) {args.sessions} one-activity workflows just before ...")
                adjacent = await floor_case(client, settings, args.sessions)
                say(f"{args.sessions} sessions, {workers} worker(s), run {n + 1} ...")
                case = await run_case(
                    settings,
                    stub.url_openai,
                    db_url,
                    workers=workers,
                    sessions=args.sessions,
                    concurrency=args.concurrency,
                    options=options,
                    agent=agent,
                )
                rows += case_rows(case, adjacent)
                say(table(case_rows(case, adjacent)))
        if args.wakes:
            for label, cache in (("cached", "1000"), ("evicted (cache 0)", "0")):
                say(f"wake latency, {label} ...")
                ms = await wake_latency(
                    settings,
                    stub.url_openai,
                    db_url,
                    wakes=args.wakes,
                    options={**options, "worker_max_cached_workflows": cache},
                    agent=agent,
                )
                rows.append(
                    (
                        f"wake -> asleep again, {label}, ms p50 (min-max)",
                        f"{statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f})",
                    )
                )
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300, help="sessions per case")
    parser.add_argument("--mode", choices=sorted(AGENTS), default="default")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case")
    parser.add_argument("--concurrency", type=int, default=64, help="start calls in flight")
    parser.add_argument("--wakes", type=int, default=10, help="wakes per cache mode (0: skip)")
    parser.add_argument("--workflow-pollers", type=int, default=0)
    parser.add_argument("--activity-pollers", type=int, default=0)
    parser.add_argument(
        "--workflow-tasks", type=int, default=0, help="worker_max_concurrent_workflow_tasks"
    )
    args = parser.parse_args(argv)
    with scratch_stack("vigil_bench_throughput") as settings:
        asyncio.run(bench(settings, args))


if __name__ == "__main__":
    sys.exit(main())
