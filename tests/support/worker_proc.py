"""A vigil worker as a real OS process, for tests that kill workers (SIGKILL) mid-session.

Settings come from the environment like the real worker's (``DATABASE_URL``,
``TEMPORAL_ADDRESS``, ``VIGIL_TASK_QUEUE``, ``VIGIL_MODEL_PROVIDER``, ``VIGIL_MODEL_BASE_URL``,
...); ``--task-queue`` overrides the queue. Once the worker polls it prints ``READY <pid>``
on stdout, so a test knows when it can start killing. It runs until it is killed (or gets
SIGINT/SIGTERM, then it stops gracefully)::

    python -m tests.support.worker_proc --task-queue tq-123

``WorkerProcess`` is the test's side of one such process. For tests that kill a worker
many times, ``WorkerForks`` starts the module once with ``--fork-server``: it imports
everything, prints ``LOADED``, then forks a fresh worker process for every line it reads,
so a restart costs a connect instead of a Python start-up (seconds on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from vigil.workers import logs
from vigil.workers.settings import Settings
from vigil.workers.stack.procs import pid_alive
from vigil.workers.temporal import connect
from vigil.workers.worker import build_worker, runtime

READY = "READY"
LOADED = "LOADED"
ROOT = Path(__file__).resolve().parents[2]


async def serve(settings: Settings, workflows: list[type] | None = None) -> None:
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with runtime(settings) as rt, build_worker(client, rt, settings.task_queue, workflows):
        print(f"{READY} {os.getpid()}", flush=True)
        await stop.wait()


def fork_server(settings: Settings) -> None:
    """Fork a worker per line on stdin until stdin closes. Nothing here may start a thread
    or an event loop: the children start theirs fresh."""
    # Children are reaped by the kernel; each child restores the default for itself.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print(LOADED, flush=True)
    for _line in sys.stdin:
        if os.fork() == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 0
            try:
                sys.stdin.close()
                asyncio.run(serve(settings))
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-queue", help="overrides VIGIL_TASK_QUEUE")
    parser.add_argument("--fork-server", action="store_true", help="fork a worker per stdin line")
    parser.add_argument(
        "--workflows",
        help="module:attribute naming a list of workflow classes to run instead of vigil's "
        "(a changed build of the workflow code, for the worker versioning tests)",
    )
    args = parser.parse_args(argv)
    workflows = None
    if args.workflows:
        import importlib

        module, _, attribute = args.workflows.partition(":")
        workflows = list(getattr(importlib.import_module(module), attribute))
    settings = Settings()
    if args.task_queue:
        settings = settings.model_copy(update={"task_queue": args.task_queue})
    logs.configure(settings.log_format, settings.log_level)
    if args.fork_server:
        fork_server(settings)
    else:
        asyncio.run(serve(settings, workflows))


# --- the test's side -----------------------------------------------------------------------


async def _start(env: dict[str, str], log: Path, *extra: str) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.worker_proc",
            *extra,
            cwd=ROOT,
            # One BLAS thread: the fork server must hold no thread its children would lack.
            env={**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


async def _expect(proc: asyncio.subprocess.Process, word: str, log: Path) -> str:
    """The next stdout line of ``proc``, which must start with ``word``."""
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if not line.startswith(word.encode()):
        output = await asyncio.to_thread(log.read_text)
        raise AssertionError(f"worker did not start: {line!r}\n{output[-3000:]}")
    return line.decode().strip()


class WorkerProcess:
    """One ``tests.support.worker_proc`` process, seen from the test."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, env: dict[str, str], log: Path) -> WorkerProcess:
        """Start a worker with ``env`` (stderr appended to ``log``); return once it polls."""
        proc = await _start(env, log)
        await _expect(proc, READY, log)
        return cls(proc)

    async def sigkill(self) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class ForkedWorker:
    """A worker forked by the fork server: a process of its own, killed by its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    async def _gone(self, within: float) -> bool:
        deadline = asyncio.get_running_loop().time() + within
        while pid_alive(self.pid):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def sigkill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        assert await self._gone(10), f"worker {self.pid} survived SIGKILL"

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not await self._gone(20):
            await self.sigkill()


class WorkerForks:
    """The fork server: ``await forks.fork()`` gives a fresh worker that already polls."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.forked: list[ForkedWorker] = []

    @classmethod
    async def start(cls, env: dict[str, str], log: Path) -> WorkerForks:
        proc = await _start(env, log, "--fork-server")
        await _expect(proc, LOADED, log)
        return cls(proc, log)

    async def fork(self) -> ForkedWorker:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"fork\n")
        await self.proc.stdin.drain()
        line = await _expect(self.proc, READY, self.log)
        worker = ForkedWorker(int(line.split()[1]))
        self.forked.append(worker)
        return worker

    async def close(self) -> None:
        """Stop every forked worker still running, then the server."""
        for worker in self.forked:
            await worker.stop()
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
