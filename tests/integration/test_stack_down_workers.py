"""`vigil stack down` stops Temporal under the workers started beside it, which then wait
for it without a word in the terminal that stopped it: it now names the workers that still
poll vigil's task queue, so the user knows what is left running."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.integration.conftest import CLIStack
from tests.support.cli import WorkerProcess
from tests.support.sessions import running_worker
from vigil.workers.liveness import still_polling
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_the_workers_left_polling_are_named(client: Client, settings: Settings) -> None:
    queue = f"tq-left-{uuid.uuid4().hex[:8]}"
    mine = settings.model_copy(update={"task_queue": queue})
    assert await asyncio.to_thread(still_polling, mine) == []
    async with running_worker(client, mine, queue):
        listed = await asyncio.to_thread(still_polling, mine)
        while not listed:  # the worker's first poll reaches the server
            await asyncio.sleep(0.2)
            listed = await asyncio.to_thread(still_polling, mine)
    assert len(listed) == 1 and "@" in listed[0], listed
    # Temporal not answering: nothing to say, and quickly.
    away = settings.model_copy(update={"temporal_address": "127.0.0.1:9"})
    assert await asyncio.to_thread(still_polling, away) is None


def test_stack_down_names_them() -> None:
    from vigil.workers.cli.stack import left_running

    assert left_running(["123@box", "456@box"], "vigil") == (
        "2 workers still poll task queue 'vigil' (123@box, 456@box): they wait for Temporal "
        "to come back; stop them with Ctrl-C where they run"
    )
    assert left_running(["9@other"], "q") == (
        "1 worker still polls task queue 'q' (9@other): it waits for Temporal to come back; "
        "stop it with Ctrl-C where it runs"
    )


def test_a_worker_gone_from_this_host_is_not_named(cli: CLIStack, tmp_path: Path) -> None:
    """Temporal lists a worker among a queue's pollers for a while after it stopped: a
    worker killed a moment before `stack down` was named as one that waits for Temporal.
    A worker of this host whose process is gone is left out."""
    queue = f"tq-gone-{uuid.uuid4().hex[:8]}"
    mine = cli.settings.model_copy(update={"task_queue": queue})
    worker = WorkerProcess({**cli.vigil.env, "VIGIL_TASK_QUEUE": queue}, tmp_path / "w.log")
    worker.start()
    deadline = time.monotonic() + 60
    while not (listed := still_polling(mine)):
        assert time.monotonic() < deadline, "the worker never polled"
        time.sleep(0.2)
    assert len(listed) == 1, listed
    assert worker.proc is not None
    worker.proc.kill()
    worker.proc.wait(30)
    assert worker.stop() != 0  # killed: stop() only closes its log
    assert still_polling(mine) == []
