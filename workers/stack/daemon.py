"""A vigil command run as a background daemon of the stack (`vigil codec-server`,
`vigil api`): one pid file, one log, one loopback port, started and stopped with it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from vigil.workers.stack.procs import (
    StackError,
    last_log_line,
    pid_alive,
    port_answers,
    port_is_free,
    read_pid,
    spawn,
    terminate,
    wait_until,
)


class VigilDaemon:
    """Subclasses set the name, the command, the port setting's name and the environment."""

    name = "daemon"
    command: tuple[str, ...] = ()
    port_setting = ""
    """The environment variable that moves the port, for the "port taken" message."""

    def __init__(self, state_dir: Path, host: str, port: int, slug: str) -> None:
        self.state_dir = state_dir
        self.host = host
        self.port = port
        self.pid_file = state_dir / "run" / f"{slug}.pid"
        self.log = state_dir / "logs" / f"{slug}.log"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        return {}

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def ready(self) -> bool:
        return port_answers(self.port, self.host)

    def start(self, say: Callable[[str], None]) -> None:
        if self.running():
            return
        if not port_is_free(self.port, self.host):
            raise StackError(
                f"port {self.port} ({self.name}) is taken by another process: stop it, "
                f"or set {self.port_setting} to a free port."
            )
        say(f"starting the {self.name} on {self.url} ...")
        spawn(
            [
                sys.executable,
                "-m",
                "vigil.workers.cli",
                *self.command,
                "--state-dir",
                str(self.state_dir),
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            log_path=self.log,
            pid_path=self.pid_file,
            env=self.env(),
        )

    def wait(self, say: Callable[[str], None], timeout: float = 30) -> None:
        wait_until(
            f"{self.name} on {self.url}",
            self.ready,
            timeout=timeout,
            alive=self.running,
            on_dead=lambda: f"Last log line: {last_log_line(self.log)} (log: {self.log})",
            say=say,
        )

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None and pid_alive(pid) and not terminate(pid):
            return  # still running: its pid file stays, for `stack down` to say so
        self.pid_file.unlink(missing_ok=True)
