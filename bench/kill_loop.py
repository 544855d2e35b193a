"""The kill loop, large: many sessions on a worker process that is SIGKILLed at random
moments (tens of kills) and restarted each time; then every transcript, tool result,
event, artifact and memory is checked: no gap, no duplicate.

Runs on the integration tests' stack (started if needed) with its own database
``vigil_kill_loop``; the model is the LLM stub over HTTP. Prints what it did and every
problem found; exits 1 if any. ``--seed`` replays a run's kill timings and scripts.

    uv run python -m bench.kill_loop                          # 20 sessions, 40 kills
    uv run python -m bench.kill_loop --sessions 8 --kills 15 --seed 12345
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.support.kill_loop import CONCERNS, LoopPlan, LoopRun, check, run_loop, worker_env
from tests.support.llm_stub import LLMStub
from tests.support.teststack import scratch_stack
from vigil.workers.client import local_activity_data
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def retried_attempts(client: Client, run: LoopRun) -> dict[str, int]:
    """Activity attempts beyond the first, per activity type, across all sessions."""
    extra: dict[str, int] = {}
    for s in run.sessions:
        history = await client.get_workflow_handle(s.session_id).fetch_history()
        scheduled: dict[int, str] = {}
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = attrs.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                name = scheduled[started.scheduled_event_id]
                extra[name] = extra.get(name, 0) + started.attempt - 1
            elif (local := local_activity_data(event)) is not None:
                # A local activity (records, low-latency model calls): one marker, its
                # last attempt.
                name = str(local.get("activity_type", ""))
                extra[name] = extra.get(name, 0) + int(local.get("attempt", 1)) - 1
    return extra


async def main(settings: Settings, plan: LoopPlan, workdir: Path) -> int:
    url = settings.endpoints().database_url
    assert url is not None
    client = await connect(settings)
    task_queue = f"kill-loop-{uuid.uuid4()}"
    say(
        f"{plan.sessions} sessions x {plan.steps} steps, {plan.kills} kills, seed {plan.seed}; "
        f"worker log {workdir / 'workers.log'}"
    )
    with LLMStub(record=False) as stub:
        env = worker_env(
            dict(os.environ),
            database_url=url,
            temporal_address=settings.endpoints().temporal_address,
            state_dir=settings.state_dir,
            task_queue=task_queue,
            model_url=stub.url_openai,
            artifact_dir=workdir / "artifacts",
        )
        run = await run_loop(
            client, stub, env, plan, task_queue=task_queue, log=workdir / "workers.log", say=say
        )
    engine = make_engine(url)
    try:
        found = await check(run, make_sessionmaker(engine))
    finally:
        await engine.dispose()
    retries = await retried_attempts(client, run)
    rows = [
        ("sessions completed", f"{len(run.results)} of {plan.sessions}"),
        ("SIGKILLs of the worker", str(run.kills)),
        ("wall time, s", f"{run.seconds:.0f}"),
        *((f"retried attempts of {name}", str(n)) for name, n in sorted(retries.items())),
        *((f"problems: {concern}", str(len(found[concern]))) for concern in CONCERNS),
    ]
    width = max(len(label) for label, _ in rows)
    print("\n".join(f"{label.ljust(width)}  {value}" for label, value in rows))
    problems = [p for concern in CONCERNS for p in found[concern]]
    for problem in problems[:50]:
        print(f"  {problem}")
    return 1 if problems else 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args(argv)
    plan = LoopPlan(sessions=args.sessions, steps=args.steps, kills=args.kills, seed=args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="vigil-kill-loop-"))
    with scratch_stack("vigil_kill_loop") as settings:
        return asyncio.run(main(settings, plan, workdir))


if __name__ == "__main__":
    sys.exit(cli())
