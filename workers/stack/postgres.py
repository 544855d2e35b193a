"""The embedded PostgreSQL 16 + pgvector, from the binaries in the ``pgserver`` wheel."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.workers.stack.procs import (
    StackError,
    last_log_line,
    pid_alive,
    port_is_free,
    postgres_answers,
)

PG_SYSTEM_USER = "vigilpg"
DB_NAME = "vigil"
DB_USER = "postgres"
STOP_EXIT_SECONDS = 30.0
"""How long ``stop`` waits for the postmaster to exit once ``pg_ctl`` has returned."""


def bin_dir() -> Path:
    # Locate the wheel's binaries without importing pgserver (its import has side effects).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the pgserver wheel is missing: run `uv sync`, or set DATABASE_URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that drop to ``user`` with its own group (not root's)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


USER_LOCK = Path(tempfile.gettempdir()) / "vigil-system-user.lock"
"""Held while one process looks for the system user and creates it: stacks started at the
same moment on a fresh machine (the test stack, the cluster stack) create it once."""


def ensure_system_user(name: str) -> None:
    """The system user ``name`` (no home, no login shell), created if it does not exist."""
    with USER_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        try:
            pwd.getpwnam(name)  # made meanwhile by a process that does not take the lock
        except KeyError:
            raise StackError(
                f"could not create the system user {name!r} that PostgreSQL runs as (it "
                f"refuses to run as root): {result.stderr.strip()[:300]}"
            ) from None


def _is_postgres(pid: int, data: Path) -> bool:
    """Whether process ``pid`` is alive and the postmaster of the cluster in ``data`` (a
    postgres process working in that folder; one of another cluster works in its own)."""
    if not pid_alive(pid):
        return False
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
            return False
    except OSError:
        return False
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == data.resolve()
    except OSError:  # another user's process: its name is all there is to go on
        return True


class EmbeddedPostgres:
    """A PostgreSQL cluster living in ``<state_dir>/postgres``, listening on loopback only."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.root = state_dir / "postgres"
        self.data = self.root / "data"
        self.log = state_dir / "logs" / "postgres.log"
        self.password_file = self.root / "password"
        self.port = port

    # PostgreSQL refuses to run as root; a machine where we are root gets a system user.
    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        ensure_system_user(PG_SYSTEM_USER)
        return PG_SYSTEM_USER

    def _chown(self, path: Path, user: str | None) -> None:
        if user is None:
            return
        entry = pwd.getpwnam(user)
        for dirpath, _dirs, files in os.walk(path):
            os.chown(dirpath, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)
        # Every parent must be traversable by the postgres user.
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                parent.chmod(mode | 0o005)

    def _pg(self, name: str, args: list[str], user: str | None, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(bin_dir() / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **_as_user(user),
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL {name} failed: {(result.stderr or result.stdout).strip()[:300]}"
                f" (log: {self.log})"
            )
        return str(result.stdout)

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str = DB_NAME) -> str:
        return f"postgresql://{DB_USER}:{self.password()}@127.0.0.1:{self.port}/{database}"

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        """Whether the postmaster its pid file names runs: that pid alive, and a postgres
        (a file left by a crash or a reboot can name a pid given to another process)."""
        pid = self.pid()
        return pid is not None and _is_postgres(pid, self.data)

    def _clear_stale_pid(self) -> None:
        """Remove a pid file that names no running postmaster whose pid is alive: PostgreSQL
        would take that process for another server of this cluster and not start."""
        pid = self.pid()
        if pid is not None and pid_alive(pid) and not _is_postgres(pid, self.data):
            (self.data / "postmaster.pid").unlink(missing_ok=True)

    def ready(self) -> bool:
        return self.running() and postgres_answers(self.port)

    def start(self, say: Callable[[str], None]) -> None:
        user = self._run_as()
        if not (self.data / "PG_VERSION").exists():
            say("initialising PostgreSQL cluster ...")
            if self.data.exists():
                shutil.rmtree(self.data)
            self.root.mkdir(parents=True, exist_ok=True)
            self.data.mkdir(parents=True)
            self.data.chmod(0o700)
            self.password_file.write_text(secrets.token_urlsafe(24))
            self.password_file.chmod(0o600)
            pwfile = self.root / ".initpw"
            pwfile.write_text(self.password())
            self._chown(self.root, user)
            try:
                self._pg(
                    "initdb",
                    [
                        "-D",
                        str(self.data),
                        "-U",
                        DB_USER,
                        "-E",
                        "UTF8",
                        "--no-locale",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        f"--pwfile={pwfile}",
                    ],
                    user,
                )
            finally:
                pwfile.unlink(missing_ok=True)
        self._clear_stale_pid()
        if self.running():
            if postgres_answers(self.port):
                return
            raise StackError(
                f"PostgreSQL in {self.data} runs but does not answer on 127.0.0.1:{self.port}; "
                "run `vigil stack down` and try again."
            )
        if not port_is_free(self.port):
            raise StackError(
                f"port {self.port} (PostgreSQL) is taken by another process: stop it, or set "
                "VIGIL_POSTGRES_PORT to a free port, or point DATABASE_URL at your own server."
            )
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._chown(self.log.parent, user)
        say(f"starting PostgreSQL on 127.0.0.1:{self.port} ...")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on"
        )
        result = subprocess.run(
            [
                str(bin_dir() / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
            start_new_session=True,
            **_as_user(user),
        )
        if result.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start: {last_log_line(self.log)} (log: {self.log})"
            )
        self._ensure_database()

    def _ensure_database(self) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME
                )
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            finally:
                await conn.close()

        asyncio.run(create())

    def stop(self) -> None:
        """Stop the server and return once its postmaster has exited: ``pg_ctl -w``
        returns when the server's pid file is gone, which it removes shortly before it
        exits, so a start right after (or a check of its pid) could still find it."""
        if not self.running():
            return
        pid = self.pid()
        user = self._run_as()
        subprocess.run(
            [
                str(bin_dir() / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
            capture_output=True,
            timeout=90,
            check=False,
            **_as_user(user),
        )
        deadline = time.monotonic() + STOP_EXIT_SECONDS
        while pid is not None and pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
