"""What durability costs: the AgentSession loop against a zero-latency model.

Prints figures; asserts nothing about time. Runs on the integration tests' stack (started
if needed, on its own database ``vigil_bench``) with the LLM stub answering at once:

(a) per-step overhead of the durable loop (a session of N steps, each one cheap tool call)
    vs. the same steps as a plain in-process loop: same provider over HTTP, same rows
    written by the same record functions, no Temporal;
(b) sessions completed per second: many short sessions at once on one worker;
(c) workflow history bytes per step early in a session and thousands of steps in: the
    per-step increment of the current run's history, (size(k) - size(k-10)) / 10;
(floor) on the same server in the same run (bench/floor.py): a no-op activity round trip
    (eager and not), a no-op local activity and one-activity workflows per second; (a)
    and (b) are printed as multiples of these.

    uv run python -m bench.session_overhead                  # the full run (long: (c))
    uv run python -m bench.session_overhead --long-steps 1000 --steps 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.converter import PayloadCodec

from bench.floor import measure as measure_floor
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, start, stub_settings
from tests.support.teststack import scratch_stack
from vigil.activities.artifacts.registry import list_artifacts
from vigil.activities.context import ContextBudget, assemble
from vigil.activities.memory.store import MemoryStore
from vigil.activities.models.base import ModelProvider, ToolCall, ToolSpec
from vigil.activities.models.pricing import cost_usd
from vigil.activities.record import store as record
from vigil.activities.tools import registry as tools
from vigil.schema import names
from vigil.schema.payloads import Budget, SessionStatus, StartSessionInput, ToolPolicy
from vigil.schema.tools import BUILTIN_TOOLS
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.wiring import make_embedder, make_provider, make_store

AGENT = "agent-bench"
CONTEXT = 40
"""Recent messages the model sees (StartSessionInput's default)."""
# The cheapest tool that still records a tool message: http_fetch to a host that is not
# on the allowlist fails at once (no network) and its error goes back to the model.
CHEAP_CALL = ("http_fetch", {"url": "http://bench.invalid/"})
# The activity's default system prompt (activities/session.py), so requests are alike.
SYSTEM = (
    "You are a careful autonomous agent run by vigil. Work towards the goal with the "
    "tools you have; call `finish` with a summary when the goal is met."
)
FINISH_AT = re.compile(r"finish at step (\d+)")


def responder(body: Any) -> Reply:
    """A cheap tool call each step; finish when the goal says "finish at step n"."""
    messages = body["messages"]
    goal = next((m["content"] for m in messages if m["role"] == "user"), "") or ""
    wanted = FINISH_AT.search(goal)
    step = 1 + sum(1 for m in messages if m["role"] == "assistant")
    if wanted and step >= int(wanted.group(1)):
        return Reply.tool_call("finish", {"summary": "done"}, usage=(50, 5))
    return Reply.tool_call(*CHEAP_CALL, usage=(50, 5))


def session_input(goal: str, *, steps: int, steps_per_run: int = 200) -> StartSessionInput:
    return StartSessionInput(
        agent_id=AGENT,
        goal=goal,
        budget=Budget(max_steps=steps),
        policy=ToolPolicy(require_approval=[]),
        steps_per_run=steps_per_run,
        context_messages=CONTEXT,
    )


# --- (a) the durable loop and the plain loop ---------------------------------------------


async def durable_session(client: Client, task_queue: str, steps: int, **extra: Any) -> Any:
    handle = await start(
        client,
        task_queue,
        session_input(f"bench {steps} steps", steps=steps, **extra),
        session_id=f"bench-{uuid.uuid4()}",
    )
    result = await handle.result()
    if result.status != SessionStatus.BUDGET_EXHAUSTED or result.steps != steps:
        raise RuntimeError(f"unexpected end of the bench session: {result}")
    return handle


async def durable_ms_per_step(client: Client, task_queue: str, steps: int) -> float:
    started = time.perf_counter()
    await durable_session(client, task_queue, steps)
    return (time.perf_counter() - started) * 1000 / steps


@dataclass
class PlainLoop:
    """The same work as the session's activities, step by step in one process."""

    settings: Settings
    sessionmaker: async_sessionmaker[DbSession]

    @property
    def memory(self) -> MemoryStore:
        if not hasattr(self, "_memory"):
            self._memory = MemoryStore(self.sessionmaker, make_embedder(self.settings))
        return self._memory

    provider: ModelProvider

    async def run(self, steps: int) -> None:
        sid = f"plain-{uuid.uuid4()}"
        goal = f"plain {steps} steps"
        async with self.sessionmaker.begin() as db:
            await record.create_session(
                db, session_id=sid, agent_id=AGENT, goal=goal, status="running"
            )
            await record.append_messages(
                db, sid, AGENT, [record.NewMessage(seq=0, role="user", content=goal)]
            )
            await record.record_events(
                db, sid, AGENT, [record.NewEvent(key="session:opened", kind="session_opened")]
            )
        specs = [ToolSpec(t.name, t.description, t.parameters) for t in BUILTIN_TOOLS.values()]
        seq = 1
        for step in range(1, steps + 1):
            model_seq = seq
            calls = await self._model(sid, step, model_seq, specs)
            seq += 1
            for index, call in enumerate(calls):
                await self._tool(sid, step, model_seq, seq, index, call)
                seq += 1
        async with self.sessionmaker.begin() as db:
            await record.append_messages(
                db,
                sid,
                AGENT,
                [record.NewMessage(seq=seq, role="system", content="ended", step=steps)],
            )
            await record.record_events(
                db, sid, AGENT, [record.NewEvent(key="session:ended", kind="session_ended")]
            )
            await record.update_session(db, sid, status="budget_exhausted", finished=True)

    async def _model(self, sid: str, step: int, seq: int, specs: list[ToolSpec]) -> list[ToolCall]:
        async with self.sessionmaker() as db:
            await record.messages_by_seq(db, sid, [seq])  # the activity's idempotency read
        # The same context assembly as the model activity: artifacts, memories, summary.
        artifacts = await list_artifacts(self.sessionmaker, agent_id=AGENT, session_id=sid)
        assembled = await assemble(
            self.sessionmaker,
            session_id=sid,
            agent_id=AGENT,
            budget=ContextBudget(total_tokens=self.settings.context_tokens, max_recent=CONTEXT),
            memory=self.memory,
            artifacts=artifacts,
        )
        context = assembled.messages
        reply = await self.provider.complete(context, specs)
        wire = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]
        for call in wire:
            args, _ = tools.parse_arguments(call["arguments"])  # as _refs() does
            if args is not None:
                tools.validate(call["name"], args, list(BUILTIN_TOOLS))
        cost = cost_usd(reply.model, reply.usage)
        async with self.sessionmaker.begin() as db:
            # The reply, its event and the usage, as the model activity writes them.
            await record.append_reply(
                db,
                sid,
                AGENT,
                record.NewMessage(
                    seq=seq,
                    role="assistant",
                    content=reply.content,
                    step=step,
                    tool_calls=wire or None,
                ),
                record.NewEvent(
                    key=f"model:{step}",
                    kind="model_call",
                    step=step,
                    payload={
                        "tokens_in": reply.usage.input_tokens,
                        "tokens_out": reply.usage.output_tokens,
                        "cost_usd": cost,
                        "model": reply.model,
                    },
                ),
                tokens_in=reply.usage.input_tokens,
                tokens_out=reply.usage.output_tokens,
                cost_usd=cost,
                step=step,
            )
        return reply.tool_calls

    async def _tool(
        self, sid: str, step: int, model_seq: int, seq: int, index: int, call: ToolCall
    ) -> None:
        async with self.sessionmaker() as db:
            await record.messages_by_seq(db, sid, [model_seq, seq])  # idempotency read
        args, error = tools.parse_arguments(call.arguments)
        if args is not None and error is None:
            error = tools.validate(call.name, args)
        if error is None and args is not None:
            ctx = tools.BuiltinContext(
                session_id=sid,
                agent_id=AGENT,
                step=step,
                settings=self.settings,
                store=make_store(self.settings),
                sessionmaker=self.sessionmaker,
                http=None,  # type: ignore[arg-type]  # the cheap call fails before any I/O
            )
            try:
                text = (await tools.IMPLEMENTATIONS[call.name](ctx, args)).text
            except tools.ToolFailed as exc:
                text = f"error: {exc}"
        else:
            text = f"error: {error}"
        async with self.sessionmaker.begin() as db:
            await record.append_messages(
                db,
                sid,
                AGENT,
                [
                    record.NewMessage(
                        seq=seq,
                        role="tool",
                        content=text,
                        step=step,
                        name=call.name,
                        tool_call_id=call.id,
                    )
                ],
            )
            await record.record_events(
                db,
                sid,
                AGENT,
                [
                    record.NewEvent(
                        key=f"tool:{step}:{index}",
                        kind="tool_call",
                        step=step,
                        payload={"tool": call.name, "call_id": call.id, "ok": False},
                    )
                ],
            )


# --- (b) throughput ----------------------------------------------------------------------


async def sessions_per_second(client: Client, task_queue: str, count: int, steps: int) -> float:
    started = time.perf_counter()
    handles = await asyncio.gather(
        *[
            start(
                client,
                task_queue,
                session_input(f"short one, finish at step {steps}", steps=steps + 5),
                session_id=f"bench-short-{uuid.uuid4()}",
            )
            for _ in range(count)
        ]
    )
    results = await asyncio.gather(*[h.result() for h in handles])
    elapsed = time.perf_counter() - started
    bad = [r for r in results if r.status != SessionStatus.COMPLETED or r.steps != steps]
    if bad:
        raise RuntimeError(f"{len(bad)} short sessions ended unexpectedly: {bad[0]}")
    return count / elapsed


# --- (c) history bytes per step ----------------------------------------------------------


@dataclass
class RunHistory:
    run_index: int
    events: list[HistoryEvent]
    before_step: dict[int, tuple[int, int]]
    """step -> (bytes, events) of this run's history just before the step's model call."""
    total_bytes: int


async def _run_history(
    run_index: int, events: list[HistoryEvent], codec: PayloadCodec | None
) -> RunHistory:
    before: dict[int, tuple[int, int]] = {}
    size = 0
    for count, event in enumerate(events):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == names.ACT_CALL_MODEL:
                payload = attrs.input.payloads[0]
                if codec is not None:  # the stack encrypts payloads
                    (payload,) = await codec.decode([payload])
                step = int(json.loads(payload.data)["step"])
                before[step] = (size, count)
        size += event.ByteSize()
    return RunHistory(run_index, events, before, size)


@dataclass
class PerStep:
    step: int
    run_index: int
    bytes_per_step: float
    events_per_step: float
    run_bytes: int
    """The run's history size after ``step`` steps."""
    by_type: dict[str, float]


def per_step_around(runs: list[RunHistory], step: int) -> PerStep:
    """(size after ``step`` - size after ``step - 10``) / 10, inside one run (the nearest
    window below ``step`` that no continue-as-new splits)."""
    for k in range(step, 9, -1):
        for run in runs:
            if k + 1 in run.before_step and k - 9 in run.before_step:
                (hi, hi_n), (lo, lo_n) = run.before_step[k + 1], run.before_step[k - 9]
                kinds: Counter[str] = Counter()
                for event in run.events[lo_n:hi_n]:
                    kinds[EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")] += (
                        event.ByteSize()
                    )
                return PerStep(
                    k,
                    run.run_index,
                    (hi - lo) / 10,
                    (hi_n - lo_n) / 10,
                    hi,
                    {kind: b / 10 for kind, b in kinds.most_common()},
                )
    raise RuntimeError(f"no 10-step window below step {step} inside one run")


async def long_session_histories(client: Client, task_queue: str, steps: int) -> list[RunHistory]:
    # One more step than measured, so the window around ``steps`` is complete.
    handle = await durable_session(client, task_queue, steps + 1, steps_per_run=steps + 1000)
    runs: list[RunHistory] = []
    run_id: str | None = None  # the last run first, then back along continue-as-new
    while True:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        codec = client.data_converter.payload_codec
        runs.append(await _run_history(0, list(history.events), codec))
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
        if not run_id:
            break
    runs.sort(key=lambda r: min(r.before_step or {0: (0, 0)}))
    for index, run in enumerate(runs, start=1):
        run.run_index = index
    return runs


# --- the report --------------------------------------------------------------------------


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [f"{'measure'.ljust(width)}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    client = await connect(settings)
    rows: list[tuple[str, str]] = []

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with LLMStub(record=False) as stub:
        stub.default = responder
        cfg = stub_settings(settings, stub.url_openai)
        task_queue = f"bench-{uuid.uuid4()}"
        async with running_worker(client, cfg, task_queue):
            say("warming up ...")
            await durable_session(client, task_queue, 5)

            say("(floor) no-op activity, local activity, one-activity workflows ...")
            floor = await measure_floor(client, cfg, workflows=args.sessions, repeat=args.repeat)
            rows += floor.rows()

            say(f"(a) durable loop, {args.steps} steps x {args.repeat} ...")
            durable = [
                await durable_ms_per_step(client, task_queue, args.steps)
                for _ in range(args.repeat)
            ]
            say(f"(a) plain loop, {args.steps} steps x {args.repeat} ...")
            engine = make_engine(settings.endpoints().database_url or "")
            provider = make_provider(cfg)
            try:
                loop = PlainLoop(cfg, make_sessionmaker(engine), provider)
                await loop.run(5)
                plain = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    await loop.run(args.steps)
                    plain.append((time.perf_counter() - started) * 1000 / args.steps)
            finally:
                await provider.aclose()
                await engine.dispose()
            d, p = statistics.median(durable), statistics.median(plain)
            rows += [
                (
                    f"(a) durable loop, ms/step (N={args.steps}, median of {args.repeat})",
                    f"{d:.1f}",
                ),
                (f"(a) plain loop, ms/step (N={args.steps}, median of {args.repeat})", f"{p:.1f}"),
                ("(a) durable / plain", f"{d / p:.1f}x"),
                ("(a) durability overhead (orchestration), ms/step", f"{d - p:.1f}"),
                (
                    "(a) durable ms/step / no-op activity round trip",
                    f"{d / floor.activity_ms:.1f}x",
                ),
                (
                    "(a) orchestration ms/step / no-op activity round trip",
                    f"{(d - p) / floor.activity_ms:.1f}x",
                ),
                (
                    "(a) durable ms/step / no-op local activity",
                    f"{d / floor.local_activity_ms:.0f}x",
                ),
            ]

            say(f"(b) {args.sessions} sessions x {args.short_steps} steps at once ...")
            rate = await sessions_per_second(client, task_queue, args.sessions, args.short_steps)
            rows += [
                (
                    f"(b) sessions/s ({args.sessions} x {args.short_steps} steps, one worker)",
                    f"{rate:.1f}",
                ),
                ("(b) steps/s", f"{rate * args.short_steps:.1f}"),
                (
                    "(b) sessions/s / floor's one-activity workflows/s",
                    f"{rate / floor.one_activity_wf_per_s:.2f}x",
                ),
            ]

            say(table(rows))  # so far, in case (c) does not get to the end
            say(f"(c) one session of {args.long_steps} steps (takes a while) ...")
            started = time.perf_counter()
            runs = await long_session_histories(client, task_queue, args.long_steps)
            took = time.perf_counter() - started
        for point in (10, args.long_steps):
            ps = per_step_around(runs, point)
            top = ", ".join(f"{kind} {b:.0f}" for kind, b in list(ps.by_type.items())[:4])
            rows += [
                (
                    f"(c) history bytes/step at step {ps.step} (run {ps.run_index})",
                    f"{ps.bytes_per_step:.0f}",
                ),
                (f"(c)   events/step at step {ps.step}", f"{ps.events_per_step:.1f}"),
                (
                    f"(c)   run {ps.run_index}'s history after step {ps.step}, bytes",
                    f"{ps.run_bytes}",
                ),
                (f"(c)   biggest per step at {ps.step}", top),
            ]
        rows += [
            ("(c) runs (continue-as-new) in the long session", f"{len(runs)}"),
            ("(c) largest run history, bytes", f"{max(r.total_bytes for r in runs)}"),
            (
                "(c) long session wall time, s",
                f"{took:.0f} ({took * 1000 / args.long_steps:.1f} ms/step)",
            ),
        ]
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="(a) steps per session")
    parser.add_argument("--repeat", type=int, default=3, help="(a) sessions per loop kind")
    parser.add_argument("--sessions", type=int, default=50, help="(b) concurrent sessions")
    parser.add_argument("--short-steps", type=int, default=3, help="(b) steps per session")
    parser.add_argument("--long-steps", type=int, default=5000, help="(c) steps of the long one")
    args = parser.parse_args(argv)
    with scratch_stack("vigil_bench") as settings:
        asyncio.run(bench(settings, args))


if __name__ == "__main__":
    sys.exit(main())
