"""The essential work of a durable one-step agent session, as the floor's workflow does it.

The floor (bench/floor.py) is a workflow with one no-op activity: it prices Temporal and
nothing else. Any durable agent step also calls its model over HTTP and writes the reply
somewhere it survives a crash. ``ModelAndRow`` is the floor's workflow whose one activity
does exactly that and nothing more: one chat-completions request to the same LLM stub
vigil's worker calls (the bench agent's system prompt, goal and built-in tools' schemas),
and one row inserted into PostgreSQL with the reply. No record of a session, no context,
no bookkeeping, no search attributes.

vigil's sessions per second over this workflow's is the share of the goal's budget left
to vigil's own record and control; the floor over it is what the essential work costs
by itself on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from temporalio import activity
from temporalio.client import Client

from bench.floor_workflows import ModelAndRow
from vigil.schema.tools import BUILTIN_TOOLS
from vigil.workers.settings import Settings, asyncpg_dsn
from vigil.workers.temporal import new_worker

TABLE = "bench_model_and_row"


def _tools() -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in BUILTIN_TOOLS.values()
    ]


class ModelAndRowStep:
    """The activity: the model call and the reply's row, on one HTTP client and one pool
    (as a worker keeps them)."""

    def __init__(self, model_url: str, pool: asyncpg.Pool, http: httpx.AsyncClient) -> None:
        self._url = model_url.rstrip("/") + "/chat/completions"
        self._pool = pool
        self._http = http
        self._tools = _tools()

    @activity.defn(name="bench.model_and_row")
    async def step(self, goal: str) -> str:
        reply = await self._http.post(
            self._url,
            json={
                "model": "stub-model",
                "messages": [
                    {"role": "system", "content": "You are a careful agent."},
                    {"role": "user", "content": goal},
                ],
                "tools": self._tools,
            },
        )
        reply.raise_for_status()
        message = reply.json()["choices"][0]["message"]
        text = json.dumps(message)
        await self._pool.execute(
            f"INSERT INTO {TABLE} (workflow_id, reply) VALUES ($1, $2)",
            activity.info().workflow_id,
            text,
        )
        return text[:800]


@asynccontextmanager
async def model_and_row_worker(
    client: Client, settings: Settings, model_url: str
) -> AsyncIterator[str]:
    """A worker for ``ModelAndRow`` (built like vigil's) on a queue of its own, its table
    in the bench's scratch database, warmed up with ten workflows; yields the queue."""
    url = settings.endpoints().database_url
    if url is None:
        raise RuntimeError("the essential step needs a database")
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=2, max_size=20)
    try:
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
            "workflow_id text NOT NULL, reply text NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        async with httpx.AsyncClient(timeout=10.0) as http:
            step = ModelAndRowStep(model_url, pool, http)
            queue = f"bench-essential-{uuid.uuid4()}"
            worker = new_worker(
                client,
                task_queue=queue,
                workflows=[ModelAndRow],
                activities=[step.step],
                settings=settings,
            )
            async with worker:
                await model_and_row_workflows(client, queue, 10)
                yield queue
    finally:
        await pool.close()


async def model_and_row_workflows(client: Client, task_queue: str, count: int) -> float:
    """Completed/s of ``count`` ``ModelAndRow`` workflows started at once."""
    started = time.perf_counter()
    handles = await asyncio.gather(
        *[
            client.start_workflow(
                ModelAndRow.run,
                "short one, finish at step 1",
                id=f"bench-essential-{uuid.uuid4()}",
                task_queue=task_queue,
            )
            for _ in range(count)
        ]
    )
    await asyncio.gather(*[h.result() for h in handles])
    return count / (time.perf_counter() - started)
