"""Process plumbing for the embedded stack: ports, pid files, detached children, builds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


class StackError(Exception):
    """A stack problem with one human-readable line that names the fix."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
"""PostgreSQL's SSLRequest: any server answers it at once with one byte (``S`` or ``N``),
before any login."""


def postgres_answers(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when PostgreSQL at host:port answers, not just takes the connection: a server
    stopped (SIGSTOP) or hung still lets the kernel accept it, and says nothing."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_SSL_REQUEST)
            return conn.recv(1) in (b"S", b"N")
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def started_at(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``),
    as text; None when it is gone or cannot be read. A pid the system gave to another
    process since has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def read_pid(path: Path) -> int | None:
    """The pid a pid file names, when that process is still the one it recorded: a file
    left by a crash or a reboot can name a pid the system has given to another process,
    which the stack must neither take for its own nor signal. (A file that names no start
    time, written before it was recorded, is taken as it is.)"""
    try:
        lines = path.read_text().strip().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(lines) > 1 and started_at(pid) != lines[1].strip():
        return None
    return pid


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a detached child (own session, output to log_path) and record its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    pid_path.unlink(missing_ok=True)
    # `setsid --fork` detaches the daemon from us (its parent becomes init), so it outlives
    # the CLI, is never our zombie, and the shell records its real pid before exec.
    script = 'echo $$ > "$0"; exec "$@"'
    with open(log_path, "ab") as log:
        subprocess.run(
            ["setsid", "--fork", "sh", "-c", script, str(pid_path), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            check=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = read_pid(pid_path)
        if pid is not None:
            start = started_at(pid)
            if start is not None:  # gone already: its log says why
                pid_path.write_text(f"{pid}\n{start}\n")
            return pid
        time.sleep(0.02)
    raise StackError(f"could not start {argv[0]}: no pid recorded in {pid_path}")


def terminate(pid: int, *, timeout: float = 15.0) -> bool:
    """SIGTERM a process group, then SIGKILL it if it has not gone within timeout; whether
    it has gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return True
            time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def last_log_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"


def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    alive: Callable[[], bool] | None = None,
    on_dead: Callable[[], str] | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Poll ``ready`` until true; fail with one clear line on timeout or a dead process."""
    if say:
        say(f"waiting for {what} ...")
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if alive is not None and not alive():
            detail = on_dead() if on_dead else ""
            raise StackError(f"{what} exited during start-up. {detail}".strip())
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not ready within {timeout:.0f}s.")
        time.sleep(0.2)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so two processes never build or start the same thing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def go_install(
    *,
    module: str,
    version: str,
    binary: str,
    cache: Path,
    say: Callable[[str], None] | None = None,
    package: str | None = None,
    slug: str | None = None,
    flags: Sequence[str] = (),
) -> Path:
    """Return a cached go-built binary, building it with ``go install`` the first time.

    ``package`` is the import path to install when it is not the module's root (its last
    element names the binary); ``slug`` names the cache folder when the binary's own name
    (``server``, ``sql``) says too little; ``flags`` go to ``go install``."""
    slug = slug or binary
    target_dir = cache / f"{slug}-{version}"
    target = target_dir / binary
    if target.exists():
        return target
    with file_lock(cache / f".{slug}-{version}.lock"):
        if target.exists():
            return target
        go = shutil.which("go")
        if go is None:
            raise StackError(
                f"{binary} is not on PATH and there is no Go toolchain to build it: "
                f"install Go (https://go.dev/dl) or put a {binary} binary on PATH."
            )
        target_dir.mkdir(parents=True, exist_ok=True)
        if say:
            say(f"building {binary} {version} with go install (first run only, a few minutes) ...")
        log = target_dir / "build.log"
        env = dict(
            os.environ, GOBIN=str(target_dir), CGO_ENABLED=os.environ.get("CGO_ENABLED", "0")
        )
        with open(log, "wb") as out:
            result = subprocess.run(
                [go, "install", *flags, f"{package or module}@{version}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(target_dir),
                check=False,
            )
        if result.returncode != 0 or not target.exists():
            raise StackError(
                f"building {binary} with `go install {package or module}@{version}` failed "
                f"({last_log_line(log)}); see {log}, or put a {binary} binary on PATH."
            )
        return target
