"""A vigil worker as a real OS process, for tests that kill workers (SIGKILL) mid-session.

Settings come from the environment like the real worker's (``DATABASE_URL``,
``TEMPORAL_ADDRESS``, ``VIGIL_TASK_QUEUE``, ``VIGIL_MODEL_PROVIDER``, ``VIGIL_MODEL_BASE_URL``,
...); ``--task-queue`` overrides the queue. Once the worker polls it prints ``READY <pid>``
on stdout, so a test knows when it can start killing. It runs until it is killed (or gets
SIGINT/SIGTERM, then it stops gracefully)::

    python -m tests.support.worker_proc --task-queue tq-123
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from vigil.workers import logs
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.worker import build_worker, runtime

READY = "READY"


async def serve(settings: Settings) -> None:
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with runtime(settings) as rt, build_worker(client, rt, settings.task_queue):
        print(f"{READY} {os.getpid()}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-queue", help="overrides VIGIL_TASK_QUEUE")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.task_queue:
        settings = settings.model_copy(update={"task_queue": args.task_queue})
    logs.configure(settings.log_format, settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
