"""vigil and LangGraph (PostgreSQL checkpointer) running the same agent loop in one run.

The loop: a model call, then the tool call it asked for, again and again. Both talk to
the same zero-latency LLM stub over HTTP with the same recent-message window (40), the
tool answers with the same text (the error vigil's http_fetch gives for a host off the
allowlist), both persist to the same PostgreSQL server (databases of their own):

- vigil: an AgentSession on the test stack's Temporal server, a worker in this process;
  step timing from the record (the assistant messages' ``created_at``); storage is the
  growth of vigil's tables plus the Temporal history of every run.
- LangGraph: ``StateGraph`` model node -> tool node with ``AsyncPostgresSaver`` (a
  checkpoint per super-step, as it ships); storage is the growth of its checkpoint tables.

ms/step is the mean of the (up to) ten steps before step 10, 100 and 1,000. LangGraph is not a
dependency of vigil: install it with ``uv sync --group peers`` (`make bench` skips this
bench with that hint when it is missing).

    uv run python -m bench.peers --steps 1000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import operator
import sys
import time
import uuid
from typing import Annotated, Any, TypedDict

import asyncpg
import httpx

from bench.floor import table
from bench.session_overhead import CONTEXT, SYSTEM, durable_session, responder
from tests.support.llm_stub import LLMStub
from tests.support.sessions import running_worker, stub_settings, transcript
from tests.support.teststack import scratch_stack
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect

POINTS = (10, 100, 1000)
INSTALL_HINT = "bench/peers.py needs LangGraph: uv sync --group peers"


def per_step_ms(times: list[float], point: int) -> float | None:
    """Mean ms of the ten steps ending at ``point`` (``times[k]``: step k+1 done, seconds)."""
    if point > len(times) or point < 2:
        return None
    first = max(0, point - 11)
    return (times[point - 1] - times[first]) * 1000 / (point - 1 - first)


async def table_bytes(url: str, tables: list[str] | None = None) -> int:
    conn = await asyncpg.connect(url)
    try:
        total: int = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm') "
            "AND ($1::text[] IS NULL OR c.relname = ANY($1))",
            tables,
        )
        return total
    finally:
        await conn.close()


async def fresh_database(base_url: str, name: str) -> str:
    server = base_url.rsplit("/", 1)[0]
    conn = await asyncpg.connect(server + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{server}/{name}"


# --- vigil ------------------------------------------------------------------------------


async def vigil_run(settings: Settings, stub_url: str, steps: int) -> dict[str, Any]:
    url = settings.endpoints().database_url or ""
    client = await connect(settings)
    cfg = stub_settings(settings, stub_url)
    task_queue = f"bench-peers-{uuid.uuid4()}"
    engine = make_engine(url)
    try:
        async with running_worker(client, cfg, task_queue):
            await durable_session(client, task_queue, 5)  # warm up
            before = await table_bytes(url)
            started = time.perf_counter()
            handle = await durable_session(client, task_queue, steps)
            wall = time.perf_counter() - started
        record_bytes = await table_bytes(url) - before
        history_bytes, run_id = 0, None
        while True:  # the last run first, then back along continue-as-new
            history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
            history_bytes += sum(event.ByteSize() for event in history.events)
            attrs = history.events[0].workflow_execution_started_event_attributes
            run_id = attrs.continued_execution_run_id
            if not run_id:
                break
        messages = await transcript(make_sessionmaker(engine), handle.id)
    finally:
        await engine.dispose()
    assistant = {m.step: m.created_at.timestamp() for m in messages if m.role == "assistant"}
    tool_text = next(m.content for m in messages if m.role == "tool")
    return {
        "times": [assistant[k] for k in sorted(assistant)],
        "wall": wall,
        "record_bytes": record_bytes,
        "history_bytes": history_bytes,
        "tool_text": tool_text,
    }


# --- LangGraph --------------------------------------------------------------------------


class LoopState(TypedDict):
    messages: Annotated[list[Any], operator.add]
    step: int
    limit: int


def openai_messages(messages: list[Any]) -> list[dict[str, Any]]:
    from langchain_core.messages import AIMessage, ToolMessage

    out: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for m in messages[-CONTEXT:]:
        if isinstance(m, AIMessage):
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": json.dumps(c["args"])},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": m.content, "tool_call_id": m.tool_call_id})
        else:
            out.append({"role": "user", "content": m.content})
    return out


async def langgraph_run(url: str, stub_url: str, steps: int, tool_text: str) -> dict[str, Any]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.graph import END, START, StateGraph

    times: list[float] = []
    http = httpx.AsyncClient(base_url=stub_url, timeout=10)

    async def model(state: LoopState) -> dict[str, Any]:
        response = await http.post(
            "/chat/completions",
            json={"model": "stub-model", "messages": openai_messages(state["messages"])},
        )
        response.raise_for_status()
        message = response.json()["choices"][0]["message"]
        calls = [
            {
                "id": c["id"],
                "name": c["function"]["name"],
                "args": json.loads(c["function"]["arguments"]),
            }
            for c in message.get("tool_calls") or []
        ]
        return {
            "messages": [AIMessage(content=message.get("content") or "", tool_calls=calls)],
            "step": state["step"] + 1,
        }

    async def tool(state: LoopState) -> dict[str, Any]:
        last = state["messages"][-1]
        times.append(time.perf_counter())  # the step's model call and tool call are done
        return {
            "messages": [
                ToolMessage(content=tool_text, tool_call_id=c["id"], name=c["name"])
                for c in last.tool_calls
            ]
        }

    def route(state: LoopState) -> str:
        return "model" if state["step"] < state["limit"] else END

    graph = StateGraph(LoopState)
    graph.add_node("model", model)
    graph.add_node("tool", tool)
    graph.add_edge(START, "model")
    graph.add_edge("model", "tool")
    graph.add_conditional_edges("tool", route, ["model", END])
    try:
        async with AsyncPostgresSaver.from_conn_string(url) as saver:
            await saver.setup()
            app = graph.compile(checkpointer=saver)
            config: Any = {"recursion_limit": 2 * steps + 10}
            warm = {"configurable": {"thread_id": "warm"}, "recursion_limit": 30}
            await app.ainvoke({"messages": [HumanMessage("warm up")], "step": 0, "limit": 5}, warm)
            tables = ["checkpoints", "checkpoint_blobs", "checkpoint_writes"]
            before = await table_bytes(url, tables)
            config["configurable"] = {"thread_id": f"bench-{uuid.uuid4()}"}
            started = time.perf_counter()
            times.clear()
            await app.ainvoke(
                {"messages": [HumanMessage(f"bench {steps} steps")], "step": 0, "limit": steps},
                config,
            )
            wall = time.perf_counter() - started
            stored = await table_bytes(url, tables) - before
    finally:
        await http.aclose()
    return {"times": times[:steps], "wall": wall, "checkpoint_bytes": stored}


# --- the report --------------------------------------------------------------------------


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    base = settings.endpoints().database_url or ""
    lg_url = await fresh_database(base, "vigil_bench_langgraph")
    with LLMStub(record=False) as stub:
        stub.default = responder
        say(f"vigil: one session of {args.steps} steps ...")
        vigil = await vigil_run(settings, stub.url_openai, args.steps)
        say(f"LangGraph: one thread of {args.steps} steps ...")
        peer = await langgraph_run(lg_url, stub.url_openai, args.steps, vigil["tool_text"])
    rows: list[tuple[str, str]] = []
    for point in POINTS:
        v, lg = per_step_ms(vigil["times"], point), per_step_ms(peer["times"], point)
        if v is None or lg is None:
            continue
        rows.append(
            (
                f"ms/step at step {point}: vigil / LangGraph",
                f"{v:.1f} / {lg:.1f} = {v / lg:.1f}x",
            )
        )
    n = args.steps
    v_bytes = vigil["record_bytes"] + vigil["history_bytes"]
    rows += [
        (
            f"whole run, ms/step ({n} steps): vigil / LangGraph",
            f"{vigil['wall'] * 1000 / n:.1f} / {peer['wall'] * 1000 / n:.1f} "
            f"= {vigil['wall'] / peer['wall']:.1f}x",
        ),
        (
            "storage bytes/step, vigil (record tables + Temporal history)",
            f"{v_bytes / n:.0f} ({vigil['record_bytes'] / n:.0f} + "
            f"{vigil['history_bytes'] / n:.0f})",
        ),
        (
            "storage bytes/step, LangGraph (checkpoint tables)",
            f"{peer['checkpoint_bytes'] / n:.0f}",
        ),
        ("storage ratio vigil / LangGraph", f"{v_bytes / max(peer['checkpoint_bytes'], 1):.2f}x"),
    ]
    print(table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args(argv)
    if importlib.util.find_spec("langgraph") is None:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(0)
    with scratch_stack("vigil_bench_peers") as settings:
        asyncio.run(bench(settings, args))


if __name__ == "__main__":
    sys.exit(main())
