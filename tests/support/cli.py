"""Driving the real `vigil` CLI as a user would: a worker process, CLI subprocesses, and an
LLM stub scripted per session.

The worker is started once per test module (its model endpoint is fixed at start), so the
sessions of a module share one stub. ``SessionScripts`` keeps them apart: each session's
goal carries a unique marker, and the stub answers a request with the next planned reply
of the session whose marker is in it (the step is the number of assistant turns the
request already holds), so sessions running side by side never take each other's replies.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.support.llm_stub import Reply
from tests.support.teststack import TEST_PORTS
from vigil.workers.settings import Settings

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent.parent
CLI = [sys.executable, "-m", "vigil.workers.cli"]
UI_PORT = TEST_PORTS["temporal_ui_port"]
TEMPORAL_ADDRESS = f"127.0.0.1:{TEST_PORTS['temporal_port']}"
READY_LINE = "worker polling"


@dataclass
class SessionScripts:
    """The stub's responder: planned replies per session, chosen by a marker in the goal."""

    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    fallback: Reply = field(default_factory=lambda: Reply.text("nothing planned: done"))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, *replies: Reply, label: str = "goal") -> str:
        """Register a script; returns a goal text carrying its marker."""
        marker = f"m{uuid.uuid4().hex[:10]}"
        with self._lock:
            self.scripts[marker] = list(replies)
        return f"{label} {marker}"

    def __call__(self, body: Any) -> Reply:
        messages = body.get("messages", []) if isinstance(body, dict) else []
        users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
        first = users[0] if users else ""
        step = sum(1 for m in messages if m.get("role") == "assistant")
        with self._lock:
            for marker, replies in self.scripts.items():
                if marker in first:
                    return replies[step] if step < len(replies) else self.fallback
        return self.fallback


def cli_env(
    *,
    database_url: str,
    state_dir: Path,
    task_queue: str,
    model_url: str,
    artifact_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """The environment of the worker and of every CLI call (a user's shell)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIGIL_") and k not in ("TEMPORAL_ADDRESS", "DATABASE_URL")
    }
    env.update(
        {
            "TEMPORAL_ADDRESS": TEMPORAL_ADDRESS,
            "DATABASE_URL": database_url,
            "VIGIL_STATE_DIR": str(state_dir),
            "VIGIL_TEMPORAL_UI_PORT": str(UI_PORT),
            "VIGIL_TASK_QUEUE": task_queue,
            "VIGIL_MODEL_PROVIDER": "openai",
            "VIGIL_MODEL_BASE_URL": model_url,
            "VIGIL_MODEL_NAME": "stub",
            "VIGIL_HTTP_ALLOW": urlsplit(model_url).netloc,  # the stub serves pages too
            "VIGIL_ARTIFACT_DIR": str(artifact_dir),
            # The CLI tests start sessions of throwaway agents that have no definition.
            "VIGIL_ALLOW_UNDEFINED_AGENTS": "1",
            "COLUMNS": "200",  # rich wraps readable output to the terminal width
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@dataclass
class Vigil:
    """Runs `vigil ...` as a subprocess with a fixed environment."""

    env: dict[str, str]
    cwd: Path = ROOT

    def __call__(
        self,
        *args: str,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def ok(
        self, *args: str, timeout: float = 60, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run and insist on exit 0 (the failure shows what the CLI said)."""
        done = self(*args, timeout=timeout, env=env)
        assert done.returncode == 0, explain(done)
        return done

    def json(self, *args: str, timeout: float = 60, env: Mapping[str, str] | None = None) -> Any:
        """Run with ``--json`` and parse stdout."""
        done = self.ok(*args, "--json", timeout=timeout, env=env)
        return json.loads(done.stdout)

    def many(
        self, *calls: tuple[str, ...], timeout: float = 60, env: Mapping[str, str] | None = None
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands side by side (each is a Python start-up of its own)."""
        procs = [(args, self.popen(*args, env=env)) for args in calls]
        done = []
        try:
            for args, proc in procs:
                out, err = proc.communicate(timeout=timeout)
                done.append(subprocess.CompletedProcess([*CLI, *args], proc.returncode, out, err))
        finally:
            for _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        return done

    def raw(
        self, *args: str | bytes, input: bytes = b"", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run with bytes as they come from a shell: arguments and standard input that need
        not be UTF-8 (output is read as text, any bad byte shown as a replacement)."""
        done = subprocess.run(
            [*CLI, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            input=input,
            timeout=timeout,
        )
        return subprocess.CompletedProcess(
            [os.fsdecode(a) for a in done.args],
            done.returncode,
            done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"),
        )

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, *args],
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def record_cli(state_dir: Path, database_url: str, artifact_dir: Path) -> Vigil:
    """`vigil` on a test stack's record and state, for commands that need neither a worker
    nor a model (memory, tokens, secrets)."""
    return Vigil(
        cli_env(
            database_url=database_url,
            state_dir=state_dir,
            task_queue="unused",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=artifact_dir,
        )
    )


def explain(done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"`vigil {' '.join(done.args[len(CLI) :])}` exited {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


def poll(
    probe: Callable[[], T | None], within: float = 30, what: str = "", every: float = 0.2
) -> T:
    """Call ``probe`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not met in {within}s: {what or probe}; last: {value!r}")
        time.sleep(every)


class WorkerProcess:
    """`vigil worker` as a real OS process; its output goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log_path: Path, args: Sequence[str] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.args = list(args)
        """Extra ``vigil worker`` arguments (``--tools``, ``--task-queue``, ``--tools-only``)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, ready_within: float = 60) -> WorkerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*CLI, "worker", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        poll(
            lambda: READY_LINE in self.log() or self.proc is None or self.proc.poll() is not None,
            ready_within,
            "the worker polls",
        )
        assert self.proc.poll() is None, f"the worker exited early:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, within: float = 30) -> int:
        """SIGTERM, then wait; returns the exit code (killed after ``within`` seconds)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(within)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the worker ignored SIGTERM:\n{self.log()}") from None
        if self._log is not None:
            self._log.close()
        return self.proc.returncode


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error output must be one line starting with ``error:`` and no traceback."""
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, explain(done)
    assert len(lines) == 1, explain(done)
    assert lines[0].startswith("error:"), explain(done)
    return lines[0]


# --- reading the record directly (sync tests; a fresh engine per call) -------------------


def known_agent(database_url: str, agent_id: str) -> None:
    """Put ``agent_id`` in the record's agents, as a session or a definition of it does."""
    from vigil.activities.record import store
    from vigil.workers.db import make_engine, make_sessionmaker

    async def go() -> None:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine).begin() as db:
                await store.ensure_agent(db, agent_id)
        finally:
            await engine.dispose()

    asyncio.run(go())


def read_record(database_url: str, session_id: str) -> tuple[Any, list[Any], list[Any]]:
    """(sessions row, transcript, events) of a session, straight from PostgreSQL."""
    from vigil.activities.record import store
    from vigil.workers.db import make_engine, make_sessionmaker

    async def go() -> tuple[Any, list[Any], list[Any]]:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as db:
                row = await store.get_session(db, session_id)
                messages: list[Any] = []
                while True:
                    page = await store.messages_page(
                        db, session_id, after_seq=messages[-1].seq if messages else -1
                    )
                    if not page:
                        break
                    messages.extend(page)
                events = await store.list_events(db, session_id)
            return row, messages, events
        finally:
            await engine.dispose()

    return asyncio.run(go())


def wait_recorded(database_url: str, session_id: str, status: str, within: float = 30) -> Any:
    """Poll the sessions row until it has ``status``; returns the row."""

    def probe() -> Any:
        row = read_record(database_url, session_id)[0]
        return row if row is not None and row.status == status else None

    return poll(probe, within, f"session {session_id} recorded as {status}")


def requests_for(stub: Any, goal: str) -> list[Any]:
    """The model requests of the session whose first user message is ``goal``."""
    out = []
    for request in stub.requests:
        users = [
            m.get("content")
            for m in (request.body or {}).get("messages", [])
            if m.get("role") == "user"
        ]
        if users and users[0] == goal:
            out.append(request)
    return out


class LineReader:
    """Collects a subprocess's stdout lines as they come (a reader thread). Use it as a
    context manager: the process is killed if it still runs at the end, pipes are closed."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def finish(self, within: float = 60) -> tuple[int, list[str], str]:
        """Wait for the process to exit; (exit code, stdout lines, stderr)."""
        code = self.proc.wait(within)
        self._thread.join(5)
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        return code, self.snapshot(), stderr

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def wait_approval(database_url: str, session_id: str, approval_id: str, within: float = 30) -> Any:
    """Poll the record until the session asked for ``approval_id`` (and waits for it)."""

    def probe() -> Any:
        row, _, events = read_record(database_url, session_id)
        asked = [
            e
            for e in events
            if e.kind == "approval_requested" and e.payload.get("approval_id") == approval_id
        ]
        decided = [
            e
            for e in events
            if e.kind == "approval_decided" and e.payload.get("approval_id") == approval_id
        ]
        waiting = row is not None and row.status == "waiting_approval"
        return asked[0] if asked and not decided and waiting else None

    return poll(probe, within, f"{session_id} waits for approval {approval_id}", every=0.1)


def query(database_url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of one SQL query on the record, as dicts."""
    from sqlalchemy import text

    from vigil.workers.db import make_engine

    async def go() -> list[dict[str, Any]]:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(text(sql), params)).mappings().all()
            return [dict(r) for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def terminate_session(settings: Settings, session_id: str) -> None:
    """Terminate a session no worker will ever run (started on a queue nobody polls), so
    it does not stay running in the test stack's Temporal."""
    from vigil.workers.temporal import connect

    async def go() -> None:
        client = await connect(settings)
        await client.get_workflow_handle(session_id).terminate(reason="test cleanup")

    asyncio.run(go())
