"""The cluster profile's Temporal: the real server (``go.temporal.io/server``) on PostgreSQL.

``vigil stack up --profile cluster`` (or ``VIGIL_STACK_PROFILE=cluster``) runs this instead
of the dev server: the frontend, history, matching and worker services in one process,
several history shards, persistence and visibility in two databases of vigil's own
PostgreSQL (``temporal``, ``temporal_visibility``), their schemas set up and upgraded by
the server's SQL tool, and Temporal UI from the ui-server module. Everything listens on
loopback; every binary is go-built once and cached beside the dev server's.

Ports, counted from the frontend's gRPC port P (``VIGIL_TEMPORAL_PORT``): P+1 frontend
membership, P+2/P+3 history gRPC/membership, P+4/P+5 matching, P+6/P+7 worker, P+10 the
frontend's HTTP API, P+20 Prometheus metrics. Membership ports must stay below 32768:
the server stores them in a ``smallint`` column.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from vigil.workers.stack.procs import (
    StackError,
    file_lock,
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
from vigil.workers.stack.services import (
    ACK_INTERVAL,
    ACK_QUEUES,
    READER_QUEUES,
    READER_RPS,
    RUN_MIN_INTERVAL,
)

SERVER_MODULE = "go.temporal.io/server"
# v1.29.1 has no `replace` directive (so `go install` accepts it) and builds with the Go
# here; newer tags need a newer Go.
SERVER_VERSION = "v1.29.1"
UI_MODULE = "github.com/temporalio/ui-server/v2"
# The ui-server release the Temporal CLI v1.5.1 embeds: its module carries the built UI.
UI_VERSION = "v2.42.1"
HISTORY_SHARDS = 4
"""Fixed for the life of a cluster's database: changing it needs a new database."""
DATABASES = ("temporal", "temporal_visibility")
ENVIRONMENT = "cluster"
"""The server's config file is ``<root>/config/cluster.yaml`` (``--env cluster``)."""
NAMESPACE_RETENTION_DAYS = 30
PORTS_FREE_WITHIN = 20.0
"""How long a start waits for the ports of a server that is still going."""
# -trimpath: no build paths in the binaries (smaller, the same wherever they were built).
GO_FLAGS = ("-trimpath",)

DYNAMIC_CONFIG: dict[str, object] = {
    # Hand an activity to the worker in the reply to its workflow task (as the dev stack).
    "system.enableActivityEagerExecution": True,
    # Worker deployments and versioning (`vigil worker` with VIGIL_DEPLOYMENT_NAME).
    "system.enableDeploymentVersions": True,
    "system.enableDeployments": True,
    "frontend.workerVersioningWorkflowAPIs": True,
    "frontend.workerVersioningDataAPIs": True,
    "frontend.workerVersioningRuleAPIs": True,
    # Workflow updates (vigil's approve/pause/... with validators) and update-with-start.
    "frontend.enableUpdateWorkflowExecution": True,
    "frontend.enableUpdateWorkflowExecutionAsyncAccepted": True,
    "frontend.enableExecuteMultiOperation": True,
    # Search attributes usable right after registration, as on the dev server.
    "system.forceSearchAttributesCacheRefreshOnRead": True,
    "limit.maxIDLength": 255,
    # The history queues' readers, as on the dev stack (services.READER_RPS): at the
    # default 20 loads a second per shard, a node of four shards handed each task on
    # after up to 50 ms once a short burst was spent.
    **{f"history.{queue}ProcessorMaxPollRPS": READER_RPS for queue in READER_QUEUES},
    # A session's next run starts at once, as on the dev stack (services.RUN_MIN_INTERVAL).
    "history.workflowIdReuseMinimalInterval": RUN_MIN_INTERVAL,
    # A closed run's deletion waits for its close to be marked processed: every second,
    # as on the dev stack (services.ACK_INTERVAL), not every 30 s.
    **{f"history.{queue}ProcessorUpdateAckInterval": ACK_INTERVAL for queue in ACK_QUEUES},
}


@dataclass(frozen=True)
class ClusterPorts:
    """Every port of the one-process cluster, from the frontend's gRPC port."""

    frontend: int
    ui: int

    @property
    def services(self) -> dict[str, tuple[int, int]]:
        """(gRPC, membership) per service."""
        base = self.frontend
        return {
            "frontend": (base, base + 1),
            "history": (base + 2, base + 3),
            "matching": (base + 4, base + 5),
            "worker": (base + 6, base + 7),
        }

    @property
    def http(self) -> int:
        return self.frontend + 10

    @property
    def metrics(self) -> int:
        return self.frontend + 20

    def all(self) -> list[int]:
        grpc_and_membership = [p for pair in self.services.values() for p in pair]
        return [*grpc_and_membership, self.http, self.metrics]

    def check(self) -> None:
        high = [m for _, m in self.services.values() if m >= 32768]
        if high:
            raise StackError(
                f"the cluster's membership ports ({high[0]}) must be below 32768 (the server "
                "keeps them in a smallint): set VIGIL_TEMPORAL_PORT lower."
            )


@dataclass(frozen=True)
class Database:
    """Where the cluster's databases live: the server of vigil's own DATABASE_URL."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> Database:
        parts = urlsplit(url)
        if not parts.hostname:
            raise StackError(
                "the cluster profile needs PostgreSQL over TCP (host:port in DATABASE_URL)"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
        )

    def url(self, database: str) -> str:
        from urllib.parse import quote

        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"


def _sql_store(db: Database, name: str, max_conns: int) -> dict[str, object]:
    return {
        "sql": {
            "pluginName": "postgres12",
            "databaseName": name,
            "connectAddr": f"{db.host}:{db.port}",
            "connectProtocol": "tcp",
            "user": db.user,
            "password": db.password,
            "maxConns": max_conns,
            "maxIdleConns": max_conns,
            "maxConnLifetime": "1h",
        }
    }


def server_config(ports: ClusterPorts, db: Database, dynamic_config: Path) -> dict[str, object]:
    """The server's static config (the module's development-postgres12.yaml, narrowed to
    loopback, vigil's ports and databases)."""
    services = {
        name: {"rpc": {"grpcPort": grpc, "membershipPort": membership, "bindOnLocalHost": True}}
        for name, (grpc, membership) in ports.services.items()
    }
    services["frontend"]["rpc"]["httpPort"] = ports.http
    return {
        "log": {"stdout": True, "level": "warn"},
        "persistence": {
            "defaultStore": "postgres-default",
            "visibilityStore": "postgres-visibility",
            "numHistoryShards": HISTORY_SHARDS,
            "datastores": {
                "postgres-default": _sql_store(db, DATABASES[0], 20),
                "postgres-visibility": _sql_store(db, DATABASES[1], 4),
            },
        },
        "global": {
            "membership": {"maxJoinDuration": "30s", "broadcastAddress": "127.0.0.1"},
            "metrics": {
                "prometheus": {
                    "framework": "tally",
                    "timerType": "histogram",
                    "listenAddress": f"127.0.0.1:{ports.metrics}",
                }
            },
        },
        "services": services,
        "clusterMetadata": {
            "enableGlobalNamespace": False,
            "failoverVersionIncrement": 10,
            "masterClusterName": "active",
            "currentClusterName": "active",
            "clusterInformation": {
                "active": {
                    "enabled": True,
                    "initialFailoverVersion": 1,
                    "rpcName": "frontend",
                    "rpcAddress": f"127.0.0.1:{ports.frontend}",
                    "httpAddress": f"127.0.0.1:{ports.http}",
                }
            },
        },
        "dcRedirectionPolicy": {"policy": "noop"},
        "dynamicConfigClient": {"filepath": str(dynamic_config), "pollInterval": "10s"},
    }


def dynamic_config_yaml() -> dict[str, object]:
    return {key: [{"value": value}] for key, value in DYNAMIC_CONFIG.items()}


def _without_btree_gin(sql: str) -> str:
    """The visibility schema without the btree_gin extension: no CREATE EXTENSION, and the
    combined ``GIN (namespace_id, column ...)`` indexes on the column alone (queries still
    work; a namespace filter is then a recheck instead of an index condition)."""
    sql = re.sub(r"(?im)^\s*CREATE EXTENSION IF NOT EXISTS btree_gin;\s*$", "", sql)
    return re.sub(r"USING GIN \(namespace_id, ", "USING GIN (", sql)


def _write_private(path: Path, text: str) -> None:
    """A config file holding the database password: readable by us only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(path.with_suffix(".tmp"), path)


class TemporalCluster:
    """The real Temporal server (all services in one process) plus Temporal UI."""

    name = "Temporal server (cluster profile)"

    def __init__(self, state_dir: Path, cache: Path, port: int, ui_port: int) -> None:
        self.root = state_dir / "temporal-cluster"
        self.config_dir = self.root / "config"
        self.dynamic_config = self.config_dir / "dynamic.yaml"
        self.pid_file = state_dir / "run" / "temporal-cluster.pid"
        self.ui_pid_file = state_dir / "run" / "temporal-ui.pid"
        self.log = state_dir / "logs" / "temporal-cluster.log"
        self.ui_log = state_dir / "logs" / "temporal-ui.log"
        self.cache = cache
        self.ports = ClusterPorts(port, ui_port)

    # --- binaries --------------------------------------------------------------------------

    def server_binary(self, say: Callable[[str], None]) -> Path:
        return self._build(SERVER_MODULE, "cmd/server", SERVER_VERSION, "temporal-server", say)

    def sql_tool(self, say: Callable[[str], None]) -> Path:
        return self._build(SERVER_MODULE, "cmd/tools/sql", SERVER_VERSION, "temporal-sql-tool", say)

    def ui_binary(self, say: Callable[[str], None]) -> Path:
        return self._build(UI_MODULE, "cmd/server", UI_VERSION, "temporal-ui-server", say)

    def _build(
        self, module: str, command: str, version: str, slug: str, say: Callable[[str], None]
    ) -> Path:
        """``go install`` of ``module/command`` at ``version``, cached under ``slug``."""
        return go_install(
            module=module,
            package=f"{module}/{command}",
            version=version,
            binary=command.rsplit("/", 1)[-1],
            slug=slug,
            cache=self.cache,
            flags=GO_FLAGS,
            say=say,
        )

    def schema_dir(self) -> Path:
        """The server module's PostgreSQL schemas, cached beside the SQL tool (the Go module
        cache may be cleaned; the cached copy stays with the binary it belongs to)."""
        target = self.cache / f"temporal-sql-tool-{SERVER_VERSION}" / "schema" / "postgresql"
        if (target / "v12" / "temporal" / "versioned").is_dir():
            return target / "v12"
        with file_lock(self.cache / f".temporal-schema-{SERVER_VERSION}.lock"):
            if not (target / "v12" / "temporal" / "versioned").is_dir():
                go = shutil.which("go")
                if go is None:
                    raise StackError("the Temporal schema needs the Go toolchain to download it")
                found = subprocess.run(
                    [go, "mod", "download", "-json", f"{SERVER_MODULE}@{SERVER_VERSION}"],
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=str(self.cache),
                )
                if found.returncode != 0:
                    raise StackError(f"go mod download {SERVER_MODULE} failed: {found.stdout}")
                source = Path(json.loads(found.stdout)["Dir"]) / "schema" / "postgresql"
                tmp = target.with_name("postgresql.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(source, tmp)
                for path in tmp.rglob("*"):  # the module cache's files are read-only
                    path.chmod(0o755 if path.is_dir() else 0o644)
                tmp.chmod(0o755)
                tmp.replace(target)
        return target / "v12"

    # --- databases and schemas ------------------------------------------------------------

    def prepare(self, database_url: str, say: Callable[[str], None]) -> None:
        """Build what is missing, create the databases, set up or upgrade their schemas,
        write the config. Idempotent: run on every `up`."""
        self.ports.check()
        server = self.server_binary(say)
        tool = self.sql_tool(say)
        del server
        db = Database.from_url(database_url)
        schemas = self.schema_dir()
        has_btree_gin = asyncio.run(self._create_databases(db))
        for name, folder in zip(DATABASES, ("temporal", "visibility"), strict=True):
            versioned = schemas / folder / "versioned"
            if folder == "visibility" and not has_btree_gin:
                versioned = self._patched_visibility(versioned)
                say("btree_gin is not available: visibility indexes without it")
            self._schema(tool, db, name, versioned, say)
        _write_private(
            self.config_dir / f"{ENVIRONMENT}.yaml",
            # JSON is YAML: the server reads it as its config file.
            json.dumps(server_config(self.ports, db, self.dynamic_config), indent=2),
        )
        self.dynamic_config.write_text(json.dumps(dynamic_config_yaml(), indent=2))

    async def _create_databases(self, db: Database) -> bool:
        """Create the cluster's databases when missing; True when btree_gin can be had."""
        import asyncpg

        conn = await asyncpg.connect(db.url("postgres"))
        try:
            for name in DATABASES:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                    await conn.execute(f'CREATE DATABASE "{name}"')
            return bool(
                await conn.fetchval(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'btree_gin'"
                )
            )
        finally:
            await conn.close()

    def _patched_visibility(self, versioned: Path) -> Path:
        target = self.root / "schema" / "visibility" / "versioned"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(versioned, target)
        for sql in target.rglob("*.sql"):
            sql.chmod(0o644)
            sql.write_text(_without_btree_gin(sql.read_text()))
        return target

    def _schema(
        self, tool: Path, db: Database, name: str, versioned: Path, say: Callable[[str], None]
    ) -> None:
        base = [
            str(tool),
            "--plugin",
            "postgres12",
            "--endpoint",
            db.host,
            "--port",
            str(db.port),
            "--user",
            db.user,
            "--database",
            name,
        ]
        # The password goes through the environment, never the process list.
        env = {**os.environ, "SQL_PASSWORD": db.password}
        if not asyncio.run(self._has_schema_table(db, name)):
            say(f"setting up the {name} schema ...")
            self._run_tool([*base, "setup-schema", "-v", "0.0"], env, name)
        say(f"upgrading the {name} schema ...")
        self._run_tool([*base, "update-schema", "-d", str(versioned)], env, name)

    @staticmethod
    async def _has_schema_table(db: Database, name: str) -> bool:
        import asyncpg

        conn = await asyncpg.connect(db.url(name))
        try:
            return bool(await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"))
        finally:
            await conn.close()

    def _run_tool(self, argv: list[str], env: dict[str, str], name: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            raise StackError(
                f"the Temporal SQL tool failed on database {name}: "
                f"{(lines[-1] if lines else '')[:300]}"
            )

    # --- processes ----------------------------------------------------------------------

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def ui_running(self) -> bool:
        pid = read_pid(self.ui_pid_file)
        return pid is not None and pid_alive(pid)

    def ready(self) -> bool:
        return port_answers(self.ports.frontend)

    def start(self, say: Callable[[str], None]) -> None:
        if self.running():
            return
        # A server stopped a moment ago may still hold a port while it goes: wait a little.
        deadline = time.monotonic() + PORTS_FREE_WITHIN
        while (taken := [p for p in self.ports.all() if not port_is_free(p)]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.5)
        if taken:
            port = taken[0]
            raise StackError(
                f"port {port} (Temporal cluster, ports {self.ports.frontend}-"
                f"{self.ports.metrics}) is taken by another process: stop it, or set "
                "VIGIL_TEMPORAL_PORT to the start of a free range."
            )
        binary = self.server_binary(say)
        say(
            f"starting the Temporal server {SERVER_VERSION} on 127.0.0.1:{self.ports.frontend} "
            f"({HISTORY_SHARDS} history shards, PostgreSQL persistence) ..."
        )
        spawn(
            [
                str(binary),
                "--root",
                str(self.root),
                "--config",
                "config",
                "--env",
                ENVIRONMENT,
                "--allow-no-auth",
                "start",
            ],
            log_path=self.log,
            pid_path=self.pid_file,
        )

    def start_ui(self, say: Callable[[str], None], codec_endpoint: str | None) -> None:
        if self.ui_running():
            return
        if not port_is_free(self.ports.ui):
            raise StackError(
                f"port {self.ports.ui} (Temporal UI) is taken by another process: stop it, "
                "or set VIGIL_TEMPORAL_UI_PORT to a free port."
            )
        binary = self.ui_binary(say)
        ui_root = self.root / "ui"
        config = {
            "temporalGrpcAddress": f"127.0.0.1:{self.ports.frontend}",
            "host": "127.0.0.1",
            "port": self.ports.ui,
            "enableUi": True,
            "defaultNamespace": "default",
            "cors": {"allowOrigins": [f"http://127.0.0.1:{self.ports.ui}"]},
            "codec": {"endpoint": codec_endpoint or ""},
        }
        # The codec endpoint may carry the codec server's token: private like the rest.
        _write_private(ui_root / "config" / "base.yaml", "{}\n")
        _write_private(ui_root / "config" / f"{ENVIRONMENT}.yaml", json.dumps(config, indent=2))
        say(f"starting Temporal UI on http://127.0.0.1:{self.ports.ui} ...")
        spawn(
            [
                str(binary),
                "--root",
                str(ui_root),
                "--config",
                "config",
                "--env",
                ENVIRONMENT,
                "start",
            ],
            log_path=self.ui_log,
            pid_path=self.ui_pid_file,
        )

    def wait(self, say: Callable[[str], None], timeout: float = 120) -> None:
        wait_until(
            f"{self.name} on 127.0.0.1:{self.ports.frontend}",
            self.ready,
            timeout=timeout,
            alive=self.running,
            on_dead=lambda: f"Last log line: {last_log_line(self.log)} (log: {self.log})",
            say=say,
        )

    def wait_ui(self, say: Callable[[str], None], timeout: float = 30) -> None:
        wait_until(
            f"Temporal UI on 127.0.0.1:{self.ports.ui}",
            lambda: port_answers(self.ports.ui),
            timeout=timeout,
            alive=self.ui_running,
            on_dead=lambda: f"Last log line: {last_log_line(self.ui_log)} (log: {self.ui_log})",
            say=say,
        )

    def stop(self, *, ui: bool = True) -> None:
        """Stop the server (and Temporal UI unless ``ui`` is false)."""
        for pid_file in (self.ui_pid_file, self.pid_file) if ui else (self.pid_file,):
            pid = read_pid(pid_file)
            if pid is not None and pid_alive(pid) and not terminate(pid):
                continue  # still running: its pid file stays, for `stack down` to say so
            pid_file.unlink(missing_ok=True)


async def ensure_namespace(address: str, namespace: str, within: float = 60) -> None:
    """Register ``namespace`` on a fresh cluster and wait until the frontend serves it (its
    namespace cache refreshes every few seconds)."""
    from datetime import timedelta

    from google.protobuf.duration_pb2 import Duration
    from temporalio.api.workflowservice.v1 import (
        DescribeNamespaceRequest,
        ListWorkflowExecutionsRequest,
        RegisterNamespaceRequest,
    )
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    deadline = asyncio.get_running_loop().time() + within
    while True:  # the frontend answers before it is healthy ("Frontend is not healthy yet")
        try:
            client = await Client.connect(address, namespace=namespace)
            break
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    service = client.workflow_service
    try:
        await service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        retention = Duration()
        retention.FromTimedelta(timedelta(days=NAMESPACE_RETENTION_DAYS))
        try:
            await service.register_namespace(
                RegisterNamespaceRequest(
                    namespace=namespace, workflow_execution_retention_period=retention
                )
            )
        except RPCError as again:
            if again.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    while True:  # served once a visibility query in it succeeds
        try:
            await service.list_workflow_executions(
                ListWorkflowExecutionsRequest(namespace=namespace, page_size=1)
            )
            return
        except RPCError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
