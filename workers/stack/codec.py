"""The embedded stack's payload key and codec server (`vigil codec-server` as a daemon)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from vigil.workers.settings import Settings
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


class CodecServer:
    """``vigil codec-server`` on loopback, with the key and token of the state folder."""

    name = "codec server"

    def __init__(self, settings: Settings) -> None:
        state = settings.resolved_state_dir
        self.settings = settings
        self.state_dir = state
        self.pid_file = state / "run" / "codec.pid"
        self.log = state / "logs" / "codec.log"
        self.host = settings.codec_host
        self.port = settings.codec_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def prepare(self) -> str:
        """Generate the payload key (unless keys are configured) and the access token the
        first time; returns the token."""
        from vigil.workers.codec import codec_token, ensure_key_file

        if self.settings.payload_keys is None:
            ensure_key_file(self.state_dir)
        token = codec_token(self.settings, create=True)
        assert token is not None
        return token

    def ui_endpoint(self, token: str) -> str:
        """What the embedded Temporal UI calls: a browser cannot add the Authorization
        header, so the token travels in the path."""
        return f"{self.url}/t/{token}"

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
                f"port {self.port} (codec server) is taken by another process: stop it, "
                "or set VIGIL_CODEC_PORT to a free port."
            )
        say(f"starting the codec server on {self.url} ...")
        spawn(
            [
                sys.executable,
                "-m",
                "vigil.workers.cli",
                "codec-server",
                "--state-dir",
                str(self.state_dir),
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            log_path=self.log,
            pid_path=self.pid_file,
            env=self._env(),
        )

    def _env(self) -> dict[str, str]:
        """The settings the daemon needs that may have come from arguments, not the
        environment: the UI's origin for CORS, and keys or token given explicitly."""
        from vigil.workers.codec_server import ui_origins

        s = self.settings
        env = {"VIGIL_CODEC_CORS_ORIGINS": ",".join(ui_origins(s))}
        if s.payload_keys is not None:
            env["VIGIL_PAYLOAD_KEYS"] = s.payload_keys.get_secret_value()
        if s.payload_key_id is not None:
            env["VIGIL_PAYLOAD_KEY_ID"] = s.payload_key_id
        if s.codec_token is not None:
            env["VIGIL_CODEC_TOKEN"] = s.codec_token.get_secret_value()
        return env

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
        if pid is not None and pid_alive(pid):
            terminate(pid)
        self.pid_file.unlink(missing_ok=True)
