"""The kill loop, small: six sessions with tool calls, artifacts and memories on a worker
process SIGKILLed a dozen times at random moments and restarted each time; every
transcript, tool result, event, artifact and memory is then there exactly once.

The big run is ``uv run python -m bench.kill_loop`` (tens of sessions and kills).
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.kill_loop import LoopPlan, LoopRun, check, run_loop, worker_env
from tests.support.llm_stub import LLMStub
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

PLAN = LoopPlan(sessions=6, steps=8, kills=12)
Loop = tuple[LoopRun, dict[str, list[str]]]


@pytest.fixture(scope="module")
async def loop(
    client: Client,
    settings: Settings,
    database_url: str,
    sessionmaker: async_sessionmaker[DbSession],
    tmp_path_factory: pytest.TempPathFactory,
) -> Loop:
    tmp = tmp_path_factory.mktemp("kill-loop")
    task_queue = f"tq-kill-{uuid.uuid4()}"
    with LLMStub() as stub:
        env = worker_env(
            dict(os.environ),
            database_url=database_url,
            temporal_address=settings.endpoints().temporal_address,
            state_dir=settings.state_dir,
            task_queue=task_queue,
            model_url=stub.url_openai,
            artifact_dir=tmp / "artifacts",
        )
        run = await run_loop(client, stub, env, PLAN, task_queue=task_queue, log=tmp / "w.log")
    return run, await check(run, sessionmaker)


def _why(run: LoopRun) -> str:
    return f"(seed {run.plan.seed}, {run.kills} kills, {run.seconds:.0f}s)"


def test_the_worker_was_killed_while_sessions_ran(
    loop: Loop,
) -> None:
    run, _ = loop
    assert run.kills == PLAN.kills, _why(run)


@pytest.mark.parametrize("concern", ["transcripts", "tool_results", "events", "artifacts"])
def test_nothing_lost_nothing_twice(loop: Loop, concern: str) -> None:
    run, found = loop
    assert not found[concern], f"{_why(run)}: {found[concern][:10]}"


def test_memories_once(loop: Loop) -> None:
    run, found = loop
    assert not found["memories"], f"{_why(run)}: {found['memories'][:10]}"
