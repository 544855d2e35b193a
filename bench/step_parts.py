"""Where a session step's CPU goes, part by part, in this process.

One worker in this process runs sessions of N steps (the LLM stub in a process of its own,
as in bench/step_modes.py). Each part below is timed with this thread's CPU clock around
it (``time.thread_time``): the worker's event loop runs one session at a time here, so
what runs while a part awaits is only the SDK's own upkeep. The parts:

- vigil's activities: ``call_model`` and, inside it, the model's HTTP call, the context's
  read and packing, the folded tool's answer, the reply's write; the bookkeeping (the
  agent's resolution, the session's opening, its records, its outcome's memory);
- the SDK: each activity task as the worker runs it (so the SDK's share is that minus the
  activity), each workflow activation (vigil's workflow code and the SDK's), of which the
  decoding and encoding of its payloads (the payload codec's passes);
- the process: its whole CPU (the SDK's core threads too) and the event loop's thread.

The timers wrap the methods for the length of the run and are removed after it. Prints
CPU per step (per session for the bookkeeping) and asserts nothing.

    uv run python -m bench.step_parts --mode low-latency --steps 100
    uv run python -m bench.step_parts --mode "default, batch_ms = 0" --steps 100

The modes are bench/step_modes.py's: ``default`` (step batches), ``low-latency``, and
``default, batch_ms = 0`` (one model activity a step, as a session of a real model has).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import resource
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import temporalio.bridge.worker as sdk_bridge
import temporalio.worker._activity as sdk_activity
import temporalio.worker._workflow as sdk_workflow

from bench.floor import table
from bench.step_modes import STEP_MODES, apply_agents, llm_stub, run_session
from tests.support.sessions import running_worker, stub_settings
from tests.support.teststack import scratch_stack
from vigil.activities import session as session_activities
from vigil.activities.agents import runtime as agent_runtime
from vigil.activities.models import openai_compat
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect

Part = tuple[Any, str, str]
"""What to time: the object holding it, the attribute, the label."""

PARTS: list[Part] = [
    (session_activities.SessionActivities, "call_model", "call_model (model activity)"),
    (openai_compat.OpenAIChatProvider, "stream", "  model HTTP call, streamed"),
    (session_activities.SessionActivities, "_read_context", "  context's read"),
    (session_activities.SessionActivities, "_context", "  context's packing"),
    (session_activities.SessionActivities, "_answers_before_reply", "  folded tool's answer"),
    (session_activities.record, "append_reply", "  reply's write"),
    (agent_runtime.AgentActivities, "resolve_agent", "agent's resolution"),
    (session_activities.SessionActivities, "_open", "session's opening"),
    (session_activities.SessionActivities, "_write_records", "records"),
    (session_activities.SessionActivities, "_remember_after_records", "outcome's memory"),
    (sdk_activity._ActivityWorker, "_handle_start_activity_task", "SDK: activity tasks, in all"),
    (sdk_workflow._WorkflowWorker, "_handle_activation", "SDK: workflow activations"),
    (sdk_bridge, "decode_activation", "  payloads decoded"),
    (sdk_bridge, "encode_completion", "  payloads encoded"),
]


class Clock:
    """Thread CPU and calls per label."""

    def __init__(self) -> None:
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def clear(self) -> None:
        self.cpu.clear()
        self.calls.clear()


@contextlib.contextmanager
def timing(clock: Clock, parts: list[Part]) -> Iterator[None]:
    """Wrap each part with a thread-CPU timer; put the originals back afterwards."""
    originals: list[tuple[Any, str, Any]] = []

    def wrap(original: Any, label: str) -> Any:
        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return await original(*args, **kwargs)
            finally:
                clock.cpu[label] += time.thread_time() - started
                clock.calls[label] += 1

        return timed

    try:
        for holder, name, label in parts:
            original = getattr(holder, name)
            originals.append((holder, name, original))
            setattr(holder, name, wrap(original, label))
        yield
    finally:
        for holder, name, original in reversed(originals):
            setattr(holder, name, original)


async def measure(settings: Settings, mode: str, steps: int, sessions: int) -> None:
    clock = Clock()
    with timing(clock, PARTS):
        client = await connect(settings)
        await apply_agents(settings)
        with llm_stub("process") as stub:
            config = stub_settings(settings, stub.url_openai)
            queue = f"bench-parts-{uuid.uuid4()}"
            async with running_worker(client, config, queue):
                for _ in range(2):  # warm: connections, caches, the first imports
                    await run_session(client, queue, mode, steps)
                clock.clear()
                before = resource.getrusage(resource.RUSAGE_SELF)
                loop_before, wall_before = time.thread_time(), time.perf_counter()
                for _ in range(sessions):
                    await run_session(client, queue, mode, steps)
                wall = time.perf_counter() - wall_before
                loop_cpu = time.thread_time() - loop_before
                after = resource.getrusage(resource.RUSAGE_SELF)
    process_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    per_step = 1000 / (sessions * steps)
    per_session = 1000 / sessions
    rows = [
        ("wall, ms/step", f"{wall * per_step:.2f}"),
        ("process CPU, ms/step", f"{process_cpu * per_step:.2f}"),
        ("  of which the event loop's thread", f"{loop_cpu * per_step:.2f}"),
    ]
    for _, _, label in PARTS:
        if not clock.calls[label]:
            continue
        bookkeeping = clock.calls[label] <= 2 * sessions and label[0] != " "
        scale, unit = (per_session, "ms/session") if bookkeeping else (per_step, "ms/step")
        rows.append(
            (
                f"{label}, {unit}",
                f"{clock.cpu[label] * scale:.2f} ({clock.calls[label] / sessions:.1f} calls "
                "a session)",
            )
        )
    print(f"{mode} mode, {sessions} sessions of {steps} steps, one at a time; thread CPU")
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=sorted(STEP_MODES), default="low-latency")
    parser.add_argument("--steps", type=int, default=100, help="steps per session")
    parser.add_argument("--sessions", type=int, default=2, help="sessions measured")
    args = parser.parse_args(argv)
    with scratch_stack("vigil_bench_parts") as settings:
        asyncio.run(measure(settings, args.mode, args.steps, args.sessions))


if __name__ == "__main__":
    main()
