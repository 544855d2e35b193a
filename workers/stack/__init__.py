"""The local stack without Docker: Temporal dev server, PostgreSQL + pgvector, MinIO.

Two profiles: ``embedded`` (the Temporal dev server on a SQLite file) and ``cluster`` (the
real Temporal server on PostgreSQL, with Temporal UI; workers/stack/cluster.py).

All state lives in one folder (``VIGIL_STATE_DIR``, default ``.vigil/``). Each part is
skipped when the user points vigil at their own server (TEMPORAL_ADDRESS, DATABASE_URL,
VIGIL_S3_ENDPOINT).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from vigil.workers.settings import POSTGRES_PORT, STACK_FILE, STACK_PORTS, Settings, StackInfo
from vigil.workers.stack.api import ApiDaemon
from vigil.workers.stack.cluster import SERVER_VERSION, TemporalCluster, ensure_namespace
from vigil.workers.stack.codec import CodecServer
from vigil.workers.stack.postgres import EmbeddedPostgres
from vigil.workers.stack.procs import StackError, file_lock, port_answers, postgres_answers
from vigil.workers.stack.services import EmbeddedMinio, TemporalDevServer

__all__ = ["PartStatus", "Stack", "StackError"]


STACK_LOCK = "stack.lock"
"""The lock file `up` and `down` hold in the state folder."""
TEMPORAL_DEFAULT_PORT = 7233
"""The port of a Temporal address that names none."""


def _host_port(address: str, default: int) -> tuple[str, int | None]:
    """(host, port) of ``host[:port]`` or ``[v6]:port`` (brackets removed); port None when
    it is no number."""
    where = urlsplit(f"//{address}")
    try:
        port = where.port or default
    except ValueError:
        return where.hostname or address, None
    return where.hostname or address, port


@dataclass
class PartStatus:
    name: str
    mode: str
    """embedded, external or off."""
    running: bool
    detail: str


def _quiet(_: str) -> None:
    return None


class Stack:
    """Brings the embedded parts up and down; reuses whatever is already running."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = _quiet) -> None:
        self.settings = settings
        self.say = say
        state = settings.resolved_state_dir
        cache = settings.resolved_bin_cache
        self.state_dir = state
        self.temporal = TemporalDevServer(
            state, cache, settings.temporal_port, settings.temporal_ui_port
        )
        self.cluster = TemporalCluster(
            state, cache, settings.temporal_port, settings.temporal_ui_port
        )
        self.profile = self._profile()
        self.postgres = EmbeddedPostgres(state, settings.postgres_port)
        self.minio = EmbeddedMinio(state, cache, settings.minio_port, settings.minio_console_port)
        self.codec = CodecServer(settings)
        self.api = ApiDaemon(settings)

    def _profile(self) -> str:
        """The profile asked for (argument or VIGIL_STACK_PROFILE); else the one the stack
        in this state folder was started with; else embedded."""
        if "stack_profile" in self.settings.model_fields_set:
            return self.settings.stack_profile
        try:
            info = self.settings.stack_info()
        except (OSError, ValueError, TypeError):
            info = None
        if (
            info is not None
            and info.profile
            and (self.temporal.running() or self.cluster.running())
        ):
            return info.profile
        return self.settings.stack_profile

    @property
    def clustered(self) -> bool:
        return self.profile == "cluster"

    @property
    def embedded_temporal(self) -> bool:
        return self.settings.temporal_address is None

    @property
    def embedded_postgres(self) -> bool:
        return self.settings.database_url is None

    @property
    def embedded_minio(self) -> bool:
        wants_s3 = self.settings.artifact_backend == "s3" or self.settings.with_minio
        return wants_s3 and self.settings.s3_endpoint is None

    def ports(self) -> list[tuple[int, str]]:
        """Every port ``up`` binds, with what binds it (the setting that moves it)."""
        s = self.settings
        bound: list[tuple[int, str]] = []
        if self.embedded_temporal:
            if self.clustered:
                bound += [
                    (port, "the Temporal cluster's (VIGIL_TEMPORAL_PORT to 7 above it, +10, +20)")
                    for port in self.cluster.ports.all()
                ]
            else:
                bound += [
                    (s.temporal_port, "Temporal (VIGIL_TEMPORAL_PORT)"),
                    (s.temporal_port + 10, "Temporal's HTTP (VIGIL_TEMPORAL_PORT + 10)"),
                    (s.temporal_port + 20, "Temporal's metrics (VIGIL_TEMPORAL_PORT + 20)"),
                ]
            bound += [
                (s.temporal_ui_port, "Temporal UI (VIGIL_TEMPORAL_UI_PORT)"),
                (s.codec_port, "the codec server (VIGIL_CODEC_PORT)"),
            ]
        if self.embedded_postgres:
            bound.append((s.postgres_port, "PostgreSQL (VIGIL_POSTGRES_PORT)"))
        if self.embedded_minio:
            bound += [
                (s.minio_port, "MinIO (VIGIL_MINIO_PORT)"),
                (s.minio_console_port, "MinIO's console (VIGIL_MINIO_CONSOLE_PORT)"),
            ]
        if s.api_in_stack:
            bound.append((s.api_port, "the HTTP API (VIGIL_API_PORT)"))
        return bound

    def _check_ports(self) -> None:
        """Two of the stack's own parts on one port: said before anything starts (the
        second part failed to start, naming the first as "another process", and what had
        started was left running)."""
        taken: dict[int, str] = {}
        for port, what in self.ports():
            first = taken.setdefault(port, what)
            if first != what:
                raise StackError(
                    f"port {port} would be both {first} and {what}: set one of them to "
                    "another port (nothing was started)"
                )

    def up(self) -> None:
        # One `up` or `down` at a time in a state folder: two at once both saw a part down
        # and started it (the second unlinked the first's pid file, orphaning a server),
        # or wiped a data folder the other was initialising. Ports first: a clash is
        # refused before anything is made, the lock's file too.
        self._check_ports()
        with file_lock(self.state_dir / STACK_LOCK):
            self._up()

    def _up(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded_temporal:
            other = self.temporal.running() if self.clustered else self.cluster.running()
            if other:
                running = "embedded" if self.clustered else "cluster"
                raise StackError(
                    f"the stack in {self.state_dir} runs the {running} profile: "
                    f"`vigil stack down` first, then `vigil stack up --profile {self.profile}`."
                )
        if self.embedded_temporal and self.clustered:
            self._up_cluster()
        else:
            self._up_embedded()
        self._publish()
        asyncio.run(self._prepare())
        if self.settings.api_in_stack:
            # After the migrations: the API serves the record from its first request.
            self.api.start(self.say)
            self.api.wait(self.say)

    def _up_cluster(self) -> None:
        """PostgreSQL first: the cluster keeps its persistence and visibility there."""
        token = self.codec.prepare()
        ui_codec = self.codec.ui_endpoint(token) if self.settings.codec_ui else None
        if self.embedded_minio:
            self.minio.start(self.say)
        if self.embedded_postgres:
            self.postgres.start(self.say)
        database_url = self.settings.endpoints().database_url or (
            self.postgres.url() if self.embedded_postgres else None
        )
        if database_url is None:
            raise StackError("the cluster profile needs PostgreSQL: set DATABASE_URL")
        if not self.cluster.running():
            self.cluster.prepare(database_url, self.say)
        self.cluster.start(self.say)
        self.codec.start(self.say)
        self.cluster.wait(self.say)
        self.say(f"registering namespace {self.settings.temporal_namespace!r} ...")
        asyncio.run(
            ensure_namespace(
                f"127.0.0.1:{self.settings.temporal_port}", self.settings.temporal_namespace
            )
        )
        self.cluster.start_ui(self.say, ui_codec)
        self.codec.wait(self.say)
        self.cluster.wait_ui(self.say)
        if self.embedded_minio:
            self.minio.wait(self.say)

    def _up_embedded(self) -> None:
        if self.embedded_temporal:
            # Payload encryption is on by default: a key and a codec server from the start.
            token = self.codec.prepare()
            ui_codec = self.codec.ui_endpoint(token) if self.settings.codec_ui else None
            self.temporal.start(self.say, ui_codec_endpoint=ui_codec)
            self.codec.start(self.say)
        if self.embedded_minio:
            self.minio.start(self.say)
        if self.embedded_postgres:
            self.postgres.start(self.say)
        if self.embedded_temporal:
            self.temporal.wait(self.say)
            self.codec.wait(self.say)
        if self.embedded_minio:
            self.minio.wait(self.say)

    def _publish(self) -> None:
        info = StackInfo(
            database_url=self.postgres.url() if self.embedded_postgres else None,
            s3_endpoint=self.minio.endpoint if self.embedded_minio else None,
            s3_access_key=self.minio.credentials()[0] if self.embedded_minio else None,
            s3_secret_key=self.minio.credentials()[1] if self.embedded_minio else None,
            temporal_address=(
                f"127.0.0.1:{self.settings.temporal_port}" if self.embedded_temporal else None
            ),
            profile=self.profile,
            ports={name: getattr(self.settings, name) for name in STACK_PORTS},
        )
        path = self.state_dir / STACK_FILE
        # A name of this writer's own: two `up`s at once (a test run's workers each bring
        # the stack up) must not rename each other's file away.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(asdict(info), handle, indent=2)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def _prepare(self) -> None:
        """Migrations, search attributes and the bucket: idempotent, run on every `up`."""
        from vigil.workers.db import migrate
        from vigil.workers.temporal import connect, ensure_search_attributes

        endpoints = self.settings.endpoints()
        if endpoints.database_url is None:
            raise StackError("no database: set DATABASE_URL or let vigil start its own")
        self.say("applying database migrations (alembic upgrade head) ...")
        try:
            await migrate(endpoints.database_url, on_wait=self.say)
        except Exception as exc:  # surfaced as one line with the cause
            raise StackError(f"database migration failed: {exc}") from exc
        self.say("registering Temporal search attributes ...")
        try:
            client = await connect(self.settings)
            await ensure_search_attributes(client)
        except Exception as exc:
            raise StackError(
                f"Temporal at {endpoints.temporal_address} refused the search attributes: {exc}"
            ) from exc
        if self.embedded_minio or self.settings.artifact_backend == "s3":
            from vigil.workers.wiring import ensure_bucket

            self.say(f"ensuring bucket {self.settings.s3_bucket!r} ...")
            await asyncio.to_thread(ensure_bucket, self.settings)

    def down(self) -> list[str]:
        """Stop everything we may have started, whatever the settings say today; the
        parts still running after it (none, as a rule)."""
        if not self.state_dir.exists():  # nothing was started here
            return self._down()
        with file_lock(self.state_dir / STACK_LOCK):
            return self._down()

    def _down(self) -> list[str]:
        self.api.stop()
        self.temporal.stop()
        self.cluster.stop()
        self.codec.stop()
        self.minio.stop()
        self.postgres.stop()
        running = {
            "api": self.api.running(),
            "temporal": self.temporal.running(),
            "codec": self.codec.running(),
            "minio": self.minio.running(),
            "postgres": self.postgres.running(),
        }
        return [name for name, yes in running.items() if yes]

    @staticmethod
    def _external_postgres(url: str | None) -> PartStatus:
        """PostgreSQL at DATABASE_URL, asked whether it answers (one on a Unix socket is
        taken as up: there is no port to ask)."""
        where = urlsplit(url or "")
        try:
            host, port = where.hostname, where.port
        except ValueError:
            host, port = None, None
        if host is None or host.startswith("/"):
            return PartStatus("postgres", "external", True, "DATABASE_URL")
        port = port or POSTGRES_PORT
        return PartStatus(
            "postgres", "external", postgres_answers(port, host), f"{host}:{port} (DATABASE_URL)"
        )

    def status(self) -> list[PartStatus]:
        parts: list[PartStatus] = []
        endpoints = self.settings.endpoints()
        if self.embedded_temporal and self.clustered:
            ports = self.cluster.ports
            parts.append(
                PartStatus(
                    "temporal",
                    "cluster",
                    self.cluster.running() and self.cluster.ready(),
                    f"127.0.0.1:{ports.frontend}, server {SERVER_VERSION} on PostgreSQL, "
                    f"metrics :{ports.metrics}",
                )
            )
            parts.append(
                PartStatus(
                    "temporal-ui",
                    "cluster",
                    self.cluster.ui_running() and port_answers(ports.ui),
                    f"{endpoints.temporal_ui}",
                )
            )
            parts.append(
                PartStatus(
                    "codec",
                    "embedded",
                    self.codec.running() and self.codec.ready(),
                    f"{self.codec.url} (payload encryption)",
                )
            )
        elif self.embedded_temporal:
            parts.append(
                PartStatus(
                    "temporal",
                    "embedded",
                    self.temporal.running() and self.temporal.ready(),
                    f"127.0.0.1:{self.settings.temporal_port}, UI {endpoints.temporal_ui}",
                )
            )
            parts.append(
                PartStatus(
                    "codec",
                    "embedded",
                    self.codec.running() and self.codec.ready(),
                    f"{self.codec.url} (payload encryption)",
                )
            )
        else:
            host, port = _host_port(endpoints.temporal_address, TEMPORAL_DEFAULT_PORT)
            parts.append(
                PartStatus(
                    "temporal",
                    "external",
                    port is not None and port_answers(port, host),
                    endpoints.temporal_address,
                )
            )
        if self.settings.api_in_stack:
            parts.append(
                PartStatus(
                    "api",
                    "embedded",
                    self.api.running() and self.api.ready(),
                    f"{self.api.url}/v1 (docs {self.api.url}/v1/docs)",
                )
            )
        if self.embedded_postgres:
            parts.append(
                PartStatus(
                    "postgres",
                    "embedded",
                    self.postgres.ready(),
                    f"127.0.0.1:{self.settings.postgres_port}, data {self.postgres.data}",
                )
            )
        else:
            parts.append(self._external_postgres(endpoints.database_url))
        # MinIO started with --with-minio runs beside a filesystem store: both are shown,
        # whether this command was given --with-minio or not.
        if self.embedded_minio or self.minio.running():
            parts.append(
                PartStatus(
                    "minio",
                    "embedded",
                    self.minio.running() and self.minio.ready(),
                    self.minio.endpoint,
                )
            )
        elif self.settings.artifact_backend == "s3":
            parts.append(PartStatus("minio", "external", True, str(self.settings.s3_endpoint)))
        if self.settings.artifact_backend != "s3":
            parts.append(PartStatus("artifacts", "filesystem", True, str(endpoints.artifact_dir)))
        return parts
