"""The Temporal dev server and MinIO of the embedded stack, both go-built and cached."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx

from vigil.workers.stack.procs import (
    StackError,
    go_install,
    last_log_line,
    pid_alive,
    port_answers,
    port_is_free,
    read_pid,
    spawn,
    terminate,
    wait_until,
)

TEMPORAL_MODULE = "github.com/temporalio/cli/cmd/temporal"
# v1.5.1 is the newest tag without a `replace` directive, so `go install` accepts it.
TEMPORAL_VERSION = "v1.5.1"
MINIO_MODULE = "github.com/minio/minio"
# MinIO publishes no semver tags on the module proxy; pin an exact pseudo-version.
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"


READER_QUEUES = ("transfer", "timer", "visibility")
"""The history queues whose readers hand tasks on: to task queues, timers, visibility."""
READER_RPS = 1000
"""Loads a second each of those readers may make, per history shard (Temporal's default:
20, for clusters of hundreds of shards)."""
RUN_MIN_INTERVAL = "100ms"
"""How soon a workflow id may start again, and a run that continued as new get its first
workflow task, after the last run's start (``history.workflowIdReuseMinimalInterval``;
Temporal's default: 1 s). A session hands over to a new run every 200 steps, and a
low-latency run of fast steps can be shorter than a second: its new run then waited
0.08-0.4 s for its first task (README "Performance"). 100 ms still keeps a workflow that
continues as new in a loop to ten runs a second."""

ACK_INTERVAL = "1s"
"""How often the servers record how far the queues that hold up a closed run's deletion
got (``history.<queue>ProcessorUpdateAckInterval``; Temporal's default: 30 s)."""
ACK_QUEUES = ("transfer", "visibility")

DEV_SERVER_TUNING: tuple[str, ...] = (
    # Hand an activity to the worker in the reply to its workflow task instead of a round
    # trip through matching: ~88 ms -> ~35 ms per activity here.
    "--dynamic-config-value",
    "system.enableActivityEagerExecution=true",
    # SQLite in write-ahead-log mode, synced at checkpoints rather than at every commit:
    # the dev server writes each history event through one connection, so each commit's
    # fsyncs were most of a dispatch's latency and capped workflows/s (2x here). A power
    # loss may lose the last commits (the database stays consistent); a process crash
    # loses nothing.
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
    # One partition per task queue: a single node gains nothing from spreading a queue,
    # and with several a poll can wait on an empty partition while a task sits in another.
    "--dynamic-config-value",
    "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value",
    "matching.numTaskqueueWritePartitions=1",
    # The history service's queue readers load new tasks at most 20 times a second per
    # shard by default, and the dev server has one shard: past a short burst, every task
    # handed to a worker (a workflow task, an activity, a fired timer) waited up to 50 ms
    # for that limiter, whatever the load (the default suits clusters of hundreds of
    # shards).
    *(
        part
        for queue in READER_QUEUES
        for part in ("--dynamic-config-value", f"history.{queue}ProcessorMaxPollRPS={READER_RPS}")
    ),
    # A session's next run starts at once, however quickly the last one went.
    "--dynamic-config-value",
    f'history.workflowIdReuseMinimalInterval="{RUN_MIN_INTERVAL}"',
    # A closed run is deleted once the server has marked its close processed (by the
    # transfer and the visibility queues), which each does every 30 s by default: an
    # erasure of an ended session waited up to 20 s for it (and often found the run not
    # yet deleted). Marked every second here.
    *(
        part
        for queue in ACK_QUEUES
        for part in (
            "--dynamic-config-value",
            f'history.{queue}ProcessorUpdateAckInterval="{ACK_INTERVAL}"',
        )
    ),
)
"""How the embedded dev server is tuned (README "Performance" has the measurements)."""


class _Daemon:
    name: str
    pid_file: Path
    log: Path

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None and pid_alive(pid) and not terminate(pid):
            return  # still running: its pid file stays, for `stack down` to say so
        self.pid_file.unlink(missing_ok=True)

    def _dead_detail(self) -> str:
        return f"Last log line: {last_log_line(self.log)} (log: {self.log})"


class TemporalDevServer(_Daemon):
    """``temporal server start-dev`` with a SQLite file so workflows survive a restart."""

    name = "Temporal dev server"

    def __init__(
        self,
        state_dir: Path,
        cache: Path,
        port: int,
        ui_port: int,
        tuning: tuple[str, ...] = DEV_SERVER_TUNING,
        persist: bool = True,
    ) -> None:
        self.tuning = tuning
        self.persist = persist
        """False: no SQLite file, all state in memory (benchmarks' reference only)."""
        self.root = state_dir / "temporal"
        self.db_file = self.root / "temporal.db"
        self.pid_file = state_dir / "run" / "temporal.pid"
        self.log = state_dir / "logs" / "temporal.log"
        self.cache = cache
        self.port = port
        self.ui_port = ui_port

    def binary(self, say: Callable[[str], None]) -> Path:
        found = shutil.which("temporal")
        if found:
            return Path(found)
        return go_install(
            module=TEMPORAL_MODULE,
            version=TEMPORAL_VERSION,
            binary="temporal",
            cache=self.cache,
            say=say,
        )

    def ready(self) -> bool:
        return port_answers(self.port) and port_answers(self.ui_port)

    def start(self, say: Callable[[str], None], ui_codec_endpoint: str | None = None) -> None:
        if self.running():
            return
        for port, what in ((self.port, "TEMPORAL_PORT"), (self.ui_port, "TEMPORAL_UI_PORT")):
            if not port_is_free(port):
                raise StackError(
                    f"port {port} (Temporal) is taken by another process: stop it, or set "
                    f"VIGIL_{what} to a free port, or point TEMPORAL_ADDRESS at your own server."
                )
        binary = self.binary(say)
        self.root.mkdir(parents=True, exist_ok=True)
        say(f"starting Temporal dev server on 127.0.0.1:{self.port} (UI :{self.ui_port}) ...")
        spawn(
            [
                str(binary),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ui-port",
                str(self.ui_port),
                "--http-port",
                str(self.port + 10),
                "--metrics-port",
                str(self.port + 20),
                *(["--db-filename", str(self.db_file)] if self.persist else []),
                "--log-level",
                "warn",
                "--namespace",
                "default",
                *self.tuning,
                # The UI asks vigil's codec server to decrypt payloads for display.
                *(["--ui-codec-endpoint", ui_codec_endpoint] if ui_codec_endpoint else []),
            ],
            log_path=self.log,
            pid_path=self.pid_file,
        )

    def wait(self, say: Callable[[str], None], timeout: float = 90) -> None:
        wait_until(
            f"{self.name} on 127.0.0.1:{self.port}",
            self.ready,
            timeout=timeout,
            alive=self.running,
            on_dead=self._dead_detail,
            say=say,
        )


class EmbeddedMinio(_Daemon):
    """A single-node MinIO on loopback with generated credentials."""

    name = "MinIO"

    def __init__(self, state_dir: Path, cache: Path, port: int, console_port: int) -> None:
        self.root = state_dir / "minio"
        self.data = self.root / "data"
        self.creds_file = self.root / "credentials.json"
        self.pid_file = state_dir / "run" / "minio.pid"
        self.log = state_dir / "logs" / "minio.log"
        self.cache = cache
        self.port = port
        self.console_port = console_port

    def binary(self, say: Callable[[str], None]) -> Path:
        found = shutil.which("minio")
        if found:
            return Path(found)
        return go_install(
            module=MINIO_MODULE, version=MINIO_VERSION, binary="minio", cache=self.cache, say=say
        )

    def credentials(self) -> tuple[str, str]:
        if not self.creds_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.creds_file.write_text(
                json.dumps(
                    {
                        "access_key": "vigil-" + secrets.token_hex(6),
                        "secret_key": secrets.token_urlsafe(24),
                    }
                )
            )
            self.creds_file.chmod(0o600)
        data = json.loads(self.creds_file.read_text())
        return str(data["access_key"]), str(data["secret_key"])

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            response = httpx.get(f"http://{self.endpoint}/minio/health/ready", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def start(self, say: Callable[[str], None]) -> None:
        if self.running():
            return
        for port, what in ((self.port, "MINIO_PORT"), (self.console_port, "MINIO_CONSOLE_PORT")):
            if not port_is_free(port):
                raise StackError(
                    f"port {port} (MinIO) is taken by another process: stop it, or set "
                    f"VIGIL_{what} to a free port, or point VIGIL_S3_ENDPOINT at your own S3."
                )
        binary = self.binary(say)
        access, secret = self.credentials()
        self.data.mkdir(parents=True, exist_ok=True)
        say(f"starting MinIO on {self.endpoint} ...")
        spawn(
            [
                str(binary),
                "server",
                str(self.data),
                "--address",
                self.endpoint,
                "--console-address",
                f"127.0.0.1:{self.console_port}",
                "--quiet",
            ],
            log_path=self.log,
            pid_path=self.pid_file,
            env={
                "MINIO_ROOT_USER": access,
                "MINIO_ROOT_PASSWORD": secret,
                "MINIO_BROWSER": "on",
                "MINIO_UPDATE": "off",
                "MINIO_CI_CD": "1",
            },
        )

    def wait(self, say: Callable[[str], None], timeout: float = 60) -> None:
        wait_until(
            f"{self.name} on {self.endpoint}",
            self.ready,
            timeout=timeout,
            alive=self.running,
            on_dead=self._dead_detail,
            say=say,
        )
