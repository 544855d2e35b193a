"""Capacity on the cluster profile: sessions/s and steps/s per `vigil worker` process.

The real Temporal server (v1.29.1, persistence and visibility in PostgreSQL) of the cluster
test stack (`tests.support.cluster`: its own state folder and ports), and 1, 2, 3 real
`vigil worker` subprocesses on one task queue. Each session runs ``--steps`` steps against
the LLM stub answering at once: steps 1..N-1 call the ``http_fetch`` tool (a page from the
stub), step N finishes; so a step is a model call, a tool call and their record. A batch of
sessions is started through vigil's client (`VigilClient.start_session`, the path of
`vigil start` and the API) and timed until every one is completed in the record. Per case:

- sessions completed per second and steps per second, overall and per worker process;
- how the steps split between the workers (each worker's ``vigil_model_calls`` counter,
  scraped from its Prometheus endpoint);
- CPU seconds per session, from /proc: the workers, the Temporal server, PostgreSQL split
  into Temporal's databases, vigil's record and the rest, and this process (the client and
  the LLM stub); the load average beside it.

    uv run python -m bench.cluster_capacity --sessions 60 --steps 4 --workers 1 2 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from bench.throughput import cpu_seconds, pid_in
from tests.support.cluster import WorkerProc, cluster_settings, stepping, worker_env
from tests.support.llm_stub import LLMStub
from tests.support.teststack import scratch_stack
from vigil.schema.payloads import Budget, ToolPolicy
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

AGENT = "agent-capacity"
TICK = os.sysconf("SC_CLK_TCK")
TEMPORAL_DATABASES = ("temporal", "temporal_visibility")
MODEL_CALLS = "vigil_model_calls"
DONE = ("completed", "failed", "cancelled", "budget_exhausted", "timed_out")


# --- CPU from /proc -----------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(p) for p in found]


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


@dataclass
class PgSnapshot:
    """PostgreSQL's CPU at one moment: the postmaster with its reaped backends (cutime),
    and each live child with the database its process title names."""

    postmaster: float
    backends: dict[int, tuple[str, float]]


def pg_snapshot(postmaster: int, vigil_db: str) -> PgSnapshot:
    stat = _stat(postmaster)
    own = 0.0 if stat is None else sum(int(stat[i]) for i in (11, 12, 13, 14)) / TICK
    backends: dict[int, tuple[str, float]] = {}
    for pid in _children(postmaster):
        words = _title(pid).split()
        # "postgres: <user> <database> <host> <state>" for a client backend.
        db = words[2] if len(words) > 3 and words[0] == "postgres:" else ""
        kind = "temporal" if db in TEMPORAL_DATABASES else "vigil" if db == vigil_db else "other"
        backends[pid] = (kind, cpu_seconds(pid))
    return PgSnapshot(own, backends)


def pg_delta(before: PgSnapshot, after: PgSnapshot) -> dict[str, float]:
    """CPU seconds between the snapshots by kind; backends that exited in between (their
    whole life is in the postmaster's cutime then) count as "other"."""
    out = {"temporal": 0.0, "vigil": 0.0, "other": after.postmaster - before.postmaster}
    for pid, (kind, cpu) in after.backends.items():
        out[kind] += cpu - before.backends.get(pid, (kind, 0.0))[1]
    for pid, (_, cpu) in before.backends.items():
        if pid not in after.backends:
            out["other"] -= cpu
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / TICK, sum(ticks) / TICK


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


# --- the workers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Worker:
    proc: WorkerProc
    metrics_port: int

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    async def model_calls(self, http: httpx.AsyncClient) -> float:
        """The worker's ``vigil_model_calls`` counter, summed over its labels."""
        reply = await http.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        reply.raise_for_status()
        total = 0.0
        for line in reply.text.splitlines():
            if line.startswith(MODEL_CALLS) and not line.startswith(f"{MODEL_CALLS}_created"):
                total += float(line.rsplit(None, 1)[1])
        return total


@asynccontextmanager
async def vigil_workers(
    settings: Settings, stub: LLMStub, task_queue: str, count: int, workflow_tasks: int
) -> AsyncIterator[list[Worker]]:
    logs = settings.resolved_state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workers: list[Worker] = []
    try:
        for n in range(count):
            port = free_port()
            env = worker_env(
                settings,
                task_queue=task_queue,
                model_url=stub.url_openai,
                VIGIL_WORKER_METRICS_PORT=str(port),
                VIGIL_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS=str(workflow_tasks),
            )
            proc = WorkerProc(env, logs / f"bench-capacity-worker-{n}.log")
            workers.append(Worker(proc, port))
            await proc.start()
        yield workers
    finally:
        for worker in workers:
            if worker.proc.proc is not None:
                await worker.proc.stop()


# --- one case -----------------------------------------------------------------------------


async def start_many(
    vigil: VigilClient, task_queue: str, count: int, steps: int, concurrency: int, tag: str
) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            started = await vigil.start_session(
                AGENT,
                f"capacity {tag} {i}",
                session_id=f"cap-{tag}-{i}-{uuid.uuid4().hex[:8]}",
                budget=Budget(max_steps=steps + 5),
                policy=ToolPolicy(require_approval=[]),
                task_queue=task_queue,
                allow_undefined=True,
            )
            return started.id

    return list(await asyncio.gather(*[one(i) for i in range(count)]))


async def wait_done(db: asyncpg.Connection, ids: list[str], within: float) -> int:
    """Until every one of ``ids`` has ended completed; the steps they took."""
    deadline = time.perf_counter() + within
    while True:
        rows = await db.fetch("SELECT status, step FROM sessions WHERE id = ANY($1)", ids)
        ended = [r for r in rows if r["status"] in DONE]
        bad = [r["status"] for r in ended if r["status"] != "completed"]
        if bad:
            raise RuntimeError(f"sessions ended {sorted(set(bad))}, not completed")
        if len(ended) == len(ids):
            return sum(int(r["step"]) for r in ended)
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {len(ended)} of {len(ids)} completed in {within:.0f}s")
        await asyncio.sleep(0.2)


@dataclass
class Case:
    workers: int
    sessions: int
    steps: int
    seconds: float
    load: tuple[float, float]
    cpu: dict[str, float]
    """CPU seconds over the case by part."""
    steps_by_worker: list[float]
    cpu_by_worker: list[float]
    machine_busy: float
    """Share of the machine's CPU busy during the case, every process counted."""

    @property
    def sessions_per_s(self) -> float:
        return self.sessions / self.seconds

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    def per_session(self, part: str) -> float:
        return self.cpu[part] / self.sessions


async def run_case(
    settings: Settings,
    stub: LLMStub,
    *,
    workers: int,
    sessions: int,
    steps: int,
    concurrency: int,
    workflow_tasks: int,
) -> Case:
    task_queue = f"bench-capacity-{uuid.uuid4()}"
    state = settings.resolved_state_dir
    db_url = settings.endpoints().database_url or ""
    vigil_db = db_url.rsplit("/", 1)[1]
    temporal_pid = pid_in(state / "run" / "temporal-cluster.pid")
    postmaster = pid_in(state / "postgres" / "data" / "postmaster.pid")
    db = await asyncpg.connect(db_url)
    vigil = await VigilClient.connect(settings)
    try:
        async with (
            vigil_workers(settings, stub, task_queue, workers, workflow_tasks) as procs,
            httpx.AsyncClient(timeout=10) as http,
        ):
            # Warm-up: every worker has polled and run sessions before the clock starts.
            warm = await start_many(vigil, task_queue, 3 * workers, steps, concurrency, "warm")
            await wait_done(db, warm, 180)

            def cpu_now() -> tuple[list[float], float, float, PgSnapshot]:
                return (
                    [cpu_seconds(w.pid) for w in procs],
                    cpu_seconds(temporal_pid),
                    own_cpu(),
                    pg_snapshot(postmaster, vigil_db),
                )

            calls0 = [await w.model_calls(http) for w in procs]
            w0, t0, d0, pg0 = cpu_now()
            m0 = machine_busy()
            started = time.perf_counter()
            ids = await start_many(vigil, task_queue, sessions, steps, concurrency, "run")
            took = await wait_done(db, ids, 120 + 5 * sessions)
            seconds = time.perf_counter() - started
            w1, t1, d1, pg1 = cpu_now()
            m1 = machine_busy()
            load = os.getloadavg()
            calls1 = [await w.model_calls(http) for w in procs]
    finally:
        await vigil.close()
        await db.close()
    pg = pg_delta(pg0, pg1)
    return Case(
        workers=workers,
        sessions=sessions,
        steps=took,
        seconds=seconds,
        load=(load[0], load[1]),
        cpu={
            "workers": sum(w1) - sum(w0),
            "temporal": t1 - t0,
            "pg temporal": pg["temporal"],
            "pg vigil": pg["vigil"],
            "pg other": pg["other"],
            "driver": d1 - d0,
        },
        steps_by_worker=[b - a for a, b in zip(calls0, calls1, strict=True)],
        cpu_by_worker=[b - a for a, b in zip(w0, w1, strict=True)],
        machine_busy=(m1[0] - m0[0]) / (m1[1] - m0[1]),
    )


# --- the table ------------------------------------------------------------------------------


def markdown(cases: list[Case]) -> str:
    def row(label: str, values: list[str]) -> str:
        return f"| {label} | " + " | ".join(values) + " |"

    ncpu = os.cpu_count() or 1
    head = [f"{c.workers} worker{'s' if c.workers > 1 else ''}" for c in cases]
    rows = [
        row("measure", head),
        row("---", ["---"] * len(cases)),
        row(
            "sessions x steps, wall s",
            [f"{c.sessions} x {c.steps / c.sessions:.0f}, {c.seconds:.1f}" for c in cases],
        ),
        row("sessions completed/s", [f"{c.sessions_per_s:.2f}" for c in cases]),
        row("steps/s", [f"{c.steps_per_s:.1f}" for c in cases]),
        row(
            "per worker process: sessions/s, steps/s",
            [f"{c.sessions_per_s / c.workers:.2f}, {c.steps_per_s / c.workers:.1f}" for c in cases],
        ),
        row(
            "steps by worker (model calls)",
            [" / ".join(f"{n:.0f}" for n in c.steps_by_worker) for c in cases],
        ),
        row(
            "CPU s/session, all parts",
            [f"{sum(c.cpu.values()) / c.sessions:.3f}" for c in cases],
        ),
    ]
    for part, label in (
        ("workers", "workers (all)"),
        ("temporal", "Temporal server"),
        ("pg temporal", "PostgreSQL: Temporal's databases"),
        ("pg vigil", "PostgreSQL: vigil's record"),
        ("pg other", "PostgreSQL: background, exited backends"),
        ("driver", "client + LLM stub (this process)"),
    ):
        rows.append(
            row(
                f"- {label}",
                [
                    f"{c.per_session(part):.3f} ({100 * c.cpu[part] / sum(c.cpu.values()):.0f}%)"
                    for c in cases
                ],
            )
        )
    pg = ("pg temporal", "pg vigil", "pg other")
    rows += [
        row(
            "cores used: each worker process",
            [" / ".join(f"{w / c.seconds:.2f}" for w in c.cpu_by_worker) for c in cases],
        ),
        row("cores used: Temporal server", [f"{c.cpu['temporal'] / c.seconds:.2f}" for c in cases]),
        row(
            "cores used: PostgreSQL",
            [f"{sum(c.cpu[p] for p in pg) / c.seconds:.2f}" for c in cases],
        ),
        row(
            f"CPU busy (of {ncpu} cores), measured parts",
            [f"{100 * sum(c.cpu.values()) / (c.seconds * ncpu):.0f}%" for c in cases],
        ),
        row("CPU busy, whole machine", [f"{100 * c.machine_busy:.0f}%" for c in cases]),
        row(
            "load average 1 / 5 min at the end",
            [f"{c.load[0]:.1f} / {c.load[1]:.1f}" for c in cases],
        ),
    ]
    return "\n".join(rows)


async def idle_cores(settings: Settings, seconds: float = 10) -> tuple[float, float]:
    """Cores the Temporal server and PostgreSQL use with no worker and no session."""
    state = settings.resolved_state_dir
    temporal = pid_in(state / "run" / "temporal-cluster.pid")
    postmaster = pid_in(state / "postgres" / "data" / "postmaster.pid")
    t0, pg0 = cpu_seconds(temporal), pg_snapshot(postmaster, "")
    await asyncio.sleep(seconds)
    t1, pg1 = cpu_seconds(temporal), pg_snapshot(postmaster, "")
    return (t1 - t0) / seconds, sum(pg_delta(pg0, pg1).values()) / seconds


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    cases: list[Case] = []
    idle_temporal, idle_pg = await idle_cores(settings)
    with LLMStub(record=False) as stub:
        stub.default = stepping(stub, args.steps, 0.0)
        # Rounds outside, worker counts inside: a change of the machine's other load hits
        # every count of a round alike.
        for n in range(args.repeat):
            for workers in args.workers:
                print(
                    f"{args.sessions} sessions x {args.steps} steps, {workers} worker(s), "
                    f"round {n + 1} (load {os.getloadavg()[0]:.1f}) ...",
                    file=sys.stderr,
                    flush=True,
                )
                case = await run_case(
                    settings,
                    stub,
                    workers=workers,
                    sessions=args.sessions,
                    steps=args.steps,
                    concurrency=args.concurrency,
                    workflow_tasks=args.workflow_tasks,
                )
                cases.append(case)
                print(markdown([case]), file=sys.stderr, flush=True)
    print(markdown(cases))
    print(
        f"\nidle, no worker and no session: Temporal server {idle_temporal:.3f} cores, "
        f"PostgreSQL {idle_pg:.3f} cores (included in the figures above)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=60, help="sessions per case")
    parser.add_argument("--steps", type=int, default=4, help="steps per session")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the worker counts")
    parser.add_argument("--concurrency", type=int, default=16, help="start calls in flight")
    parser.add_argument(
        "--workflow-tasks",
        type=int,
        default=8,
        help="VIGIL_WORKER_MAX_CONCURRENT_WORKFLOW_TASKS of each worker",
    )
    args = parser.parse_args(argv)
    with scratch_stack("vigil_bench_capacity", cluster_settings) as settings:
        asyncio.run(bench(settings, args))


if __name__ == "__main__":
    main()
