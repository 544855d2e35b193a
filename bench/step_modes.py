"""vigil's durable step in both modes, against the floor and LangGraph, in one run.

Everything on the same embedded server and PostgreSQL, one worker in this process, the
LLM stub answering at once from a process of its own, as an external LLM would (one step =
one model call + one cheap tool call, as in bench/session_overhead.py; ``--stub inline``
runs it in a thread of this process, as this bench did until 2026-12-02):

(floor) bench/floor.py: a no-op activity round trip (eager and not), a no-op local
    activity, one-activity workflows completed and started per second;
(a) ms/step of an N-step session in the default mode (the tool call folded into the
    model activity, plain steps taken in step batches), in the default mode with one
    step a model activity (``[model] batch_ms = 0``) and in the low-latency mode (an
    agent with ``[model] execution = "local"``: the model call a local activity).
    Activity work is the time spent inside vigil's activities (timed by a worker
    interceptor, so it is the real activities' own work); orchestration is the rest:
    ms/step - activity work, printed as a multiple of the floor's round trip, and (each
    session right after a loop of as many of the floor's no-op activities) as the median
    and spread of each pair's ratio;
(b) sessions completed/s and started/s (S sessions of 1 step, then of 3 steps, started at
    once), in both modes, started with the plain Temporal client (the session reads its
    agent's definition itself, in a local activity) and with vigil's client (as `vigil
    start` and the API start them: the starter reads the definition, and the start input
    carries it), each burst right after a burst of S of the floor's one-activity
    workflows on the same server (the floor moves between minutes here) and a burst of S
    workflows whose one activity does an agent step's essential work (the model call and
    one row written: bench/essential.py), repeated R times: the median of the R ratios
    to the adjacent floor and to the essential step, and their spread; and the CPU
    each burst cost per workflow (this process, the Temporal server, PostgreSQL:
    bench/cpu.py), whose ratio moves less with the machine's other load than the rates;
(peers) when LangGraph is installed (``uv sync --group peers``): ms/step at steps 10, 100
    and 1,000 of LangGraph with its PostgreSQL checkpointer (bench/peers.py) beside one
    session in each mode, timed alike (from each step's end), in R rounds (each mode, then
    LangGraph right after): the medians, and the median and spread of the rounds' ratios
    (each point is the mean of ten steps of one run, which moves a lot from run to run).

Prints figures and ratios; asserts nothing about time.

    uv run python -m bench.step_modes
    uv run python -m bench.step_modes --steps 50 --repeat 2 --sessions 30 --peer-steps 200 \
        --peer-repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from bench.cpu import CPU, StackCPU
from bench.essential import model_and_row_worker, model_and_row_workflows
from bench.floor import Floor, floor_worker, loop_ms, one_activity_workflows, table
from bench.floor import measure as measure_floor
from bench.floor_workflows import ActivityLoop
from bench.peers import INSTALL_HINT, POINTS, fresh_database, langgraph_run, per_step_ms
from bench.session_overhead import responder, session_input
from tests.support.llm_stub import LLMStub, StubProcess
from tests.support.sessions import running_worker, start, stub_settings, transcript
from tests.support.teststack import scratch_stack
from vigil.schema.agents import AgentSpec
from vigil.schema.payloads import SessionResult, SessionStatus, StartSessionInput
from vigil.schema.tools import BUILTIN_TOOLS
from vigil.workers.agents import AgentService
from vigil.workers.client import VigilClient
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.worker import freeze_start_up

MODES = {"default": "bench-folded", "low-latency": "bench-local"}
"""Mode -> the bench agent that runs it (the same definition but for ``execution``)."""
ONE_STEP_A_CALL = "default, batch_ms = 0"
STEP_MODES = {**MODES, ONE_STEP_A_CALL: "bench-folded-single"}
"""(a)'s modes: also the default mode without step batches (one model activity a step),
the round trip the goal is about taken by every step."""

STARTERS = {
    "Temporal client": "the plain Temporal client: the session reads its agent's definition "
    "itself (one local activity)",
    "vigil client": "vigil's client, as `vigil start` and the API start sessions: the starter "
    "reads the definition and the start input carries it",
}
"""How (b) starts its sessions -> what that means for the session."""


class ActivityClock(ClientInterceptor, Interceptor):
    """Seconds spent inside activities (regular and local), per workflow id. A client
    interceptor that is also a worker's: the worker of that client takes it."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Timed(next, self)


class _Timed(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, clock: ActivityClock) -> None:
        super().__init__(next)
        self.clock = clock

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        started = time.perf_counter()
        try:
            return await super().execute_activity(input)
        finally:
            self.clock.seconds[activity.info().workflow_id or ""] += time.perf_counter() - started


async def apply_agents(settings: Settings) -> None:
    """Both bench agents: every built-in tool, the model call as an activity or local."""
    engine = make_engine(settings.endpoints().database_url or "")
    try:
        service = AgentService(make_sessionmaker(engine))
        for mode, name in STEP_MODES.items():
            spec: dict[str, Any] = {"name": name, "tools": [{"name": t} for t in BUILTIN_TOOLS]}
            if mode == "low-latency":
                spec["model"] = {"execution": "local"}
            elif mode == ONE_STEP_A_CALL:
                spec["model"] = {"batch_ms": 0}
            await service.apply_spec(AgentSpec.model_validate(spec))
    finally:
        await engine.dispose()


def mode_input(mode: str, goal: str, *, steps: int) -> StartSessionInput:
    # The starter's budget wins over the agent's (the session ends after ``steps``).
    return session_input(goal, steps=steps).model_copy(
        update={"agent_id": STEP_MODES[mode], "overrides": ["budget"]}
    )


async def run_session(
    client: Client, task_queue: str, mode: str, steps: int
) -> WorkflowHandle[Any, Any]:
    handle = await start(
        client,
        task_queue,
        mode_input(mode, f"bench {steps} steps", steps=steps),
        session_id=f"bench-{mode}-{uuid.uuid4()}",
    )
    result = await handle.result()
    if result.status != SessionStatus.BUDGET_EXHAUSTED or result.steps != steps:
        raise RuntimeError(f"unexpected end of the bench session: {result}")
    return handle


@dataclass
class Step:
    ms: float
    """Wall ms/step of the session (median of the repeats)."""
    work_ms: float
    """Of which inside vigil's activities."""
    events: float
    """History events per step."""
    history_bytes: float
    adjacent: list[float] = field(default_factory=list)
    """Each repeat's orchestration over the floor's round trip measured right before it
    (a loop of as many no-op activities as the session has steps)."""

    @property
    def orchestration_ms(self) -> float:
        return self.ms - self.work_ms


async def step_cost(
    client: Client,
    task_queue: str,
    clock: ActivityClock,
    mode: str,
    steps: int,
    repeat: int,
    floor_queue: str | None = None,
) -> Step:
    """The session's step, ``repeat`` times; with ``floor_queue``, each session right after
    a loop of the floor's no-op activities on it (the machine's speed moves between
    minutes here: a ratio taken within a pair does not move with it)."""
    walls, works, adjacent = [], [], []
    handle: WorkflowHandle[Any, Any] | None = None
    for _ in range(repeat):
        floor_ms = None
        if floor_queue is not None:
            floor_ms = await loop_ms(client, floor_queue, ActivityLoop, steps)
        started = time.perf_counter()
        handle = await run_session(client, task_queue, mode, steps)
        walls.append((time.perf_counter() - started) * 1000 / steps)
        works.append(clock.seconds[handle.id] * 1000 / steps)
        if floor_ms is not None:
            adjacent.append((walls[-1] - works[-1]) / floor_ms)
    assert handle is not None
    events = list((await handle.fetch_history()).events)  # one run: steps < steps_per_run
    return Step(
        statistics.median(walls),
        statistics.median(works),
        len(events) / steps,
        sum(e.ByteSize() for e in events) / steps,
        adjacent,
    )


async def sessions_per_second(
    client: Client,
    task_queue: str,
    mode: str,
    count: int,
    steps: int,
    starter: VigilClient | None = None,
) -> tuple[float, float]:
    """(completed/s, started/s) of ``count`` sessions of ``steps`` steps started at once,
    with the plain Temporal client, or with vigil's ``starter`` (its start reads the
    agent's definition, and its start calls are timed with that)."""
    goal = f"short one, finish at step {steps}"
    arg = mode_input(mode, goal, steps=steps + 5)

    async def one() -> WorkflowHandle[Any, SessionResult]:
        if starter is None:
            return await start(client, task_queue, arg, session_id=f"bench-short-{uuid.uuid4()}")
        # As `vigil start` without --id: the client names the session.
        started = await starter.start_session(
            arg.agent_id,
            goal,
            budget=arg.budget,
            policy=arg.policy,
            task_queue=task_queue,
            context_messages=arg.context_messages,
        )
        return client.get_workflow_handle(started.id, result_type=SessionResult)

    started = time.perf_counter()
    handles = await asyncio.gather(*[one() for _ in range(count)])
    start_s = time.perf_counter() - started
    results = await asyncio.gather(*[h.result() for h in handles])
    elapsed = time.perf_counter() - started
    bad = [r for r in results if r.status != SessionStatus.COMPLETED or r.steps != steps]
    if bad:
        raise RuntimeError(f"{len(bad)} short sessions ended unexpectedly: {bad[0]}")
    return count / elapsed, count / start_s


def _median_spread(values: list[float], digits: int = 2) -> str:
    med, low, high = statistics.median(values), min(values), max(values)
    return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


async def adjacent_bursts(
    client: Client,
    task_queue: str,
    floor_queue: str,
    mode: str,
    count: int,
    steps: int,
    repeat: int,
    cpu: StackCPU,
    essential_queue: str,
    starter: VigilClient | None = None,
) -> list[tuple[str, str]]:
    """``repeat`` rounds of: ``count`` of the floor's one-activity workflows at once,
    ``count`` of the essential step's workflows (bench/essential.py), then ``count``
    sessions of ``steps`` steps at once; rows of the medians and the ratios, and of the
    CPU each workflow cost this process, the Temporal server and PostgreSQL."""
    floors, done, started, ratios, start_ratios = [], [], [], [], []
    essentials, over_essential = [], []
    floor_cpu: list[CPU] = []
    essential_cpu: list[CPU] = []
    session_cpu: list[CPU] = []
    for _ in range(repeat):
        before = cpu.read()
        floor_done, _starts = await one_activity_workflows(client, floor_queue, count)
        floor_end = cpu.read()
        essential_done = await model_and_row_workflows(client, essential_queue, count)
        between = cpu.read()
        essential_cpu.append((between - floor_end).per(count))
        essentials.append(essential_done / floor_done)
        completed, starts = await sessions_per_second(
            client, task_queue, mode, count, steps, starter
        )
        after = cpu.read()
        floor_cpu.append((floor_end - before).per(count))
        session_cpu.append((after - between).per(count))
        over_essential.append(completed / essential_done)
        floors.append(floor_done)
        done.append(completed)
        started.append(starts)
        ratios.append(completed / floor_done)
        start_ratios.append(starts / floor_done)
    how = "vigil client" if starter is not None else "Temporal client"
    label = f"(b) {mode}, {how}: {count} x {steps} steps, median of {repeat} (min-max)"
    capacity = [f.total / s.total for f, s in zip(floor_cpu, session_cpu, strict=True)]
    return [
        (f"{label}: the adjacent floor's workflows/s", _median_spread(floors, 1)),
        (f"{label}: sessions completed/s", _median_spread(done, 1)),
        (
            f"{label}: completed / adjacent floor",
            f"{_median_spread(ratios)}x (goal >= 0.7x)",
        ),
        (
            f"{label}: essential step's workflows (model call + one row) / adjacent floor",
            f"{_median_spread(essentials)}x",
        ),
        (
            f"{label}: completed / adjacent essential step's workflows",
            f"{_median_spread(over_essential)}x",
        ),
        (f"{label}: sessions started/s (the start calls)", _median_spread(started, 1)),
        (f"{label}: started / adjacent floor", f"{_median_spread(start_ratios)}x"),
        (f"{label}: CPU ms per floor workflow", str(_median_cpu(floor_cpu))),
        (f"{label}: CPU ms per essential step's workflow", str(_median_cpu(essential_cpu))),
        (f"{label}: CPU ms per session", str(_median_cpu(session_cpu))),
        (
            f"{label}: floor's CPU / session's CPU (the rate ratio were CPU all that limits)",
            f"{_median_spread(capacity)}x",
        ),
    ]


def _median_cpu(samples: list[CPU]) -> CPU:
    """Each part's median (so the parts need not add up to the total's median)."""
    return CPU(
        statistics.median(s.worker for s in samples),
        statistics.median(s.temporal for s in samples),
        statistics.median(s.postgres for s in samples),
    )


async def step_times(settings: Settings, handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    """When each step ended (its assistant message's ``created_at``) and the tool's text."""
    engine = make_engine(settings.endpoints().database_url or "")
    try:
        messages = await transcript(make_sessionmaker(engine), handle.id)
    finally:
        await engine.dispose()
    ends = {m.step: m.created_at.timestamp() for m in messages if m.role == "assistant"}
    return {
        "times": [ends[k] for k in sorted(ends)],
        "tool_text": next(m.content for m in messages if m.role == "tool"),
    }


def step_rows(mode: str, step: Step, floor: Floor, n: int, repeat: int) -> list[tuple[str, str]]:
    o = step.orchestration_ms
    return [
        (f"(a) {mode}: ms/step (N={n}, median of {repeat})", f"{step.ms:.1f}"),
        (f"(a) {mode}: activity work, ms/step", f"{step.work_ms:.1f}"),
        (f"(a) {mode}: orchestration (ms/step - work), ms/step", f"{o:.1f}"),
        (
            f"(a) {mode}: orchestration / no-op activity round trip",
            f"{o / floor.activity_ms:.2f}x (goal for the default mode: <= 1.2x)",
        ),
        (
            f"(a) {mode}: orchestration / the round trip measured right before, median of "
            f"{len(step.adjacent)} pairs (spread)",
            f"{_median_spread(step.adjacent)}x" if step.adjacent else "not measured",
        ),
        (
            f"(a) {mode}: orchestration / no-op local activity",
            f"{o / floor.local_activity_ms:.1f}x",
        ),
        (
            f"(a) {mode}: history events / bytes per step",
            f"{step.events:.1f} / {step.history_bytes:.0f}",
        ),
    ]


def peer_rows(
    ends: dict[str, list[dict[str, Any]]], lg_runs: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Per point: LangGraph's and each mode's ms/step (medians over the rounds), and the
    median of the rounds' ratios with their spread (a point is ten steps of one run)."""
    rows: list[tuple[str, str]] = []
    for point in POINTS:
        lg = [ms for run in lg_runs if (ms := per_step_ms(run["times"], point)) is not None]
        if len(lg) < len(lg_runs):
            continue
        parts = []
        for mode, runs in ends.items():
            pairs = [
                (v, b)
                for run, b in zip(runs, lg, strict=True)
                if (v := per_step_ms(run["times"], point)) is not None
            ]
            if not pairs:
                continue
            ratios = sorted(v / b for v, b in pairs)
            parts.append(
                f"{mode} {statistics.median(v for v, _ in pairs):.1f} "
                f"({statistics.median(ratios):.2f}x, {ratios[0]:.2f}-{ratios[-1]:.2f}x)"
            )
        lg_ms = statistics.median(lg)
        rows.append(
            (
                f"(peers) ms/step at step {point}: LangGraph / vigil, medians of "
                f"{len(lg_runs)} rounds (ratio spread)",
                f"{lg_ms:.1f} / " + ", ".join(parts),
            )
        )
    rows.append(("(peers) goal", "low-latency <= LangGraph (<= 1.00x) from step 10"))
    return rows


async def bench(settings: Settings, args: argparse.Namespace, peers: bool) -> None:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    clock = ActivityClock()
    cpu = StackCPU(settings)
    base = await connect(settings)
    config = base.config()
    config["interceptors"] = [*config["interceptors"], clock]  # the worker takes it too
    client = Client(**config)
    await apply_agents(settings)
    rows: list[tuple[str, str]] = []
    ends: dict[str, list[dict[str, Any]]] = {}
    lg_runs: list[dict[str, Any]] = []
    with llm_stub(args.stub) as stub:
        rows.append(("LLM stub", STUB_PLACES[args.stub]))
        cfg = stub_settings(settings, stub.url_openai)
        task_queue = f"bench-{uuid.uuid4()}"
        async with running_worker(client, cfg, task_queue):
            say("warming up ...")
            for mode in STEP_MODES:
                await run_session(client, task_queue, mode, 5)
            # As `vigil worker` does before it polls (VIGIL_WORKER_GC_FREEZE): the floor's
            # worker and vigil's, both in this process, gain alike.
            freeze_start_up()

            say("(floor) no-op activity, local activity, one-activity workflows ...")
            floor = await measure_floor(client, cfg, workflows=args.sessions, repeat=args.repeat)
            rows += floor.rows()

            steps: dict[str, Step] = {}
            async with floor_worker(client, cfg) as floor_queue:
                for mode in STEP_MODES:
                    say(
                        f"(a) {mode} mode, {args.steps} steps x {args.repeat}, each after a "
                        "loop of the floor's activities ..."
                    )
                    steps[mode] = await step_cost(
                        client, task_queue, clock, mode, args.steps, args.repeat, floor_queue
                    )
                    rows += step_rows(mode, steps[mode], floor, args.steps, args.repeat)
            low, default = steps["low-latency"], steps["default"]
            rows.append(("(a) low-latency / default, ms/step", f"{low.ms / default.ms:.2f}x"))

            # Starting sessions as the API server does: its client, its pool.
            starter = VigilClient(cfg, client, db_pool_size=cfg.api_db_pool_size)
            try:
                async with (
                    floor_worker(client, cfg) as floor_queue,
                    model_and_row_worker(client, cfg, stub.url_openai) as essential_queue,
                ):
                    for short in (1, 3):
                        for mode in MODES:
                            for how in STARTERS:
                                say(
                                    f"(b) {mode} mode, {how}, {args.repeat} x {args.sessions} "
                                    f"sessions x {short} steps at once, each after a floor "
                                    "burst ..."
                                )
                                rows += await adjacent_bursts(
                                    client,
                                    task_queue,
                                    floor_queue,
                                    mode,
                                    args.sessions,
                                    short,
                                    args.repeat,
                                    cpu,
                                    essential_queue,
                                    starter if how == "vigil client" else None,
                                )
            finally:
                await starter.close()
            rows += [(f"(b) started with the {how}", what) for how, what in STARTERS.items()]

            if peers:
                lg_url = await fresh_database(
                    settings.endpoints().database_url or "", "vigil_bench_lg"
                )
                # Rounds of one session in each mode and a LangGraph thread right after
                # them: each point's ratio is taken within a round, then the median.
                for n in range(args.peer_repeat):
                    for mode in MODES:
                        say(
                            f"(peers) round {n + 1}: vigil {mode} mode, one session of "
                            f"{args.peer_steps} steps ..."
                        )
                        handle = await run_session(client, task_queue, mode, args.peer_steps)
                        ends.setdefault(mode, []).append(await step_times(settings, handle))
                    say(f"(peers) round {n + 1}: LangGraph, one thread of {args.peer_steps} steps")
                    tool_text = ends["low-latency"][-1]["tool_text"]
                    lg_runs.append(
                        await langgraph_run(lg_url, stub.url_openai, args.peer_steps, tool_text)
                    )
        if peers:
            rows += peer_rows(ends, lg_runs)
        else:
            rows.append(
                ("(peers)", f"skipped: {INSTALL_HINT if args.peer_steps else '--peer-steps 0'}")
            )
    print(table(rows))


STUB_PLACES = {
    "process": "a process of its own (as an external LLM: none of this process's CPU)",
    "inline": "a thread of this process (its work shares the worker's interpreter)",
}


def llm_stub(place: str) -> Any:
    """The zero-latency LLM stub answering with ``responder``, where ``place`` says."""
    if place == "process":
        return StubProcess(f"{responder.__module__}:{responder.__name__}")
    stub = LLMStub(record=False)
    stub.default = responder
    return stub


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="(a) steps per session")
    parser.add_argument("--repeat", type=int, default=3, help="(a) sessions per mode, (b) rounds")
    parser.add_argument("--sessions", type=int, default=30, help="(b) concurrent sessions")
    parser.add_argument("--peer-steps", type=int, default=1000, help="(peers) steps; 0: skip")
    parser.add_argument(
        "--peer-repeat", type=int, default=3, help="(peers) rounds (each mode, then LangGraph)"
    )
    parser.add_argument(
        "--stub",
        choices=sorted(STUB_PLACES),
        default="process",
        help="where the LLM stub runs (default: a process of its own; vigil and LangGraph "
        "both call it over HTTP). Before 2026-12-02 it ran inline",
    )
    args = parser.parse_args(argv)
    peers = importlib.util.find_spec("langgraph") is not None and args.peer_steps > 0
    with scratch_stack("vigil_bench") as settings:
        asyncio.run(bench(settings, args, peers))


if __name__ == "__main__":
    main()
