"""vigil's one settings class.

Every part points at a user's own server when configured and falls back to the
embedded default (started by ``vigil stack up``) when not. Read by workers and
activities only, never by workflow code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"
POSTGRES_PORT = 5432
"""PostgreSQL's port where a URL names none."""
STACK_PORTS = (
    "temporal_port",
    "temporal_ui_port",
    "postgres_port",
    "minio_port",
    "minio_console_port",
    "codec_port",
    "api_port",
)
"""The ports ``vigil stack up`` publishes in ``stack.json`` for later commands."""
PAYLOAD_KEY_FILE = "payload-keys.json"
"""Keys the embedded stack generated (``{"current": id, "keys": {id: base64}}``, mode 0600)."""
CODEC_TOKEN_FILE = "codec-token"
"""The codec server's access token the embedded stack generated (mode 0600)."""
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Settings(BaseSettings):
    """Configuration from ``VIGIL_*`` variables (plus ``TEMPORAL_ADDRESS`` and ``DATABASE_URL``)."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore", populate_by_name=True)

    state_dir: Path = Path(".vigil")
    """Folder holding all state of the embedded stack (databases, logs, artifacts, pids)."""

    bin_cache: Path = Path("~/.cache/vigil/bin")
    """Where go-built binaries (Temporal CLI, MinIO) are cached between runs."""
    stack_profile: Literal["embedded", "cluster"] = "embedded"
    """What `vigil stack up` runs as Temporal: ``embedded`` the dev server (SQLite file),
    ``cluster`` the real Temporal server on PostgreSQL (workers/stack/cluster.py). Once a
    stack runs, `status`, `down` and `doctor` follow the profile it was started with."""

    # Temporal
    temporal_address: str | None = Field(
        default=None, validation_alias=AliasChoices("TEMPORAL_ADDRESS", "VIGIL_TEMPORAL_ADDRESS")
    )
    """A user's Temporal frontend (host:port); unset means the embedded dev server."""
    temporal_namespace: str = Field(
        default="default",
        validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "VIGIL_TEMPORAL_NAMESPACE"),
    )
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_ui_url: str | None = None
    """Base URL of Temporal UI for links; derived from the embedded stack when unset."""
    task_queue: str = "vigil"
    deployment_name: str | None = None
    """Worker versioning: the Temporal worker deployment this worker belongs to (e.g.
    ``vigil``). Set together with ``build_id``; unset means an unversioned worker."""
    build_id: str | None = None
    """Worker versioning: this build of the workflow code (e.g. a git sha). Sessions started
    on a build stay on it (see ``versioning_behavior``)."""
    versioning_behavior: Literal["pinned", "auto_upgrade"] = "pinned"
    """How a versioned worker's sessions move between builds: ``pinned`` (a session runs to
    its end on the build it started on; new builds need no patches for it) or
    ``auto_upgrade`` (moves to the current build at its next workflow task: every change
    must then be patched)."""

    # PostgreSQL
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "VIGIL_DATABASE_URL")
    )
    """A user's PostgreSQL with pgvector; unset means the embedded server (pgserver wheel)."""
    postgres_port: int = 5433

    # Artifacts
    artifact_backend: Literal["fs", "s3"] = "fs"
    artifact_dir: Path | None = None
    """Filesystem store root; defaults to ``<state_dir>/artifacts``."""
    s3_endpoint: str | None = None
    """host:port of MinIO or any S3; unset with backend s3 means the embedded MinIO."""
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "vigil"
    s3_secure: bool = False
    s3_region: str | None = None
    minio_port: int = 9000
    minio_console_port: int = 9001
    with_minio: bool = False
    """Start the embedded MinIO even when the artifact backend is the filesystem."""

    # Models
    model_provider: Literal["scripted", "openai", "anthropic"] = "scripted"
    model_name: str = "scripted-1"
    model_base_url: str | None = None
    model_api_key: SecretStr | None = None
    model_timeout_seconds: float = 60.0
    model_connections: str | None = None
    """More named model connections, as JSON: ``{"NAME": {"kind": "openai|anthropic|scripted",
    "base_url": ..., "model": ..., "credential": ..., "timeout_seconds": ...}}``. The
    VIGIL_MODEL_* settings are the connection named ``default`` unless this names one."""
    models_file: Path | None = None
    """A TOML file of connections (``[connections.NAME]`` tables, the same fields)."""
    secret_key: SecretStr | None = None
    """Key of the encrypted credentials table (32 bytes, base64 or hex); without it the
    embedded stack's ``<state_dir>/secret.key`` is used when there is one."""

    # Agents
    allow_undefined_agents: bool = False
    """Let `vigil start` / the client start agents that have no definition (vigil's
    built-in tools and the default model); otherwise such a start is refused."""

    # Tools
    http_allow: str = ""
    """Comma-separated ``host`` / ``host:port`` entries http_fetch may reach; a port-less
    entry means the default ports, ``*`` any public host; loopback and private addresses
    only when an entry names the address (activities/tools/http_fetch.py). Empty: none."""
    http_max_bytes: int = 10 * 1024 * 1024
    http_timeout_seconds: float = 20.0
    tool_modules: str = ""
    """Comma-separated modules whose ``@vigil.tool`` functions the worker loads
    (``vigil worker --tools`` adds to them)."""
    tool_entry_points: bool = True
    """Also load the tools of installed packages' ``vigil.tools`` entry points."""
    tools_only: bool = False
    """A tool worker: serve only run_tool for its loaded tools on its task queue."""
    mcp_idle_seconds: float = Field(default=0.0, ge=0)
    """A worker stops an MCP server that had no call for this long (0, the default: never;
    a server may hold state a session waiting on a person comes back to); it starts again
    on its next call."""
    mcp_max_servers: int = Field(default=64, ge=1)
    """The most MCP servers a worker keeps running (one per agent and server): past it the
    least recently used idle one is stopped before another starts."""

    # Limits
    context_tokens: int = 8000
    """Token budget of what one model call is sent (estimated offline)."""
    inline_limit_bytes: int = 64 * 1024
    """Content larger than this never enters workflow history: it becomes an artifact."""
    warm_up_seconds: float = Field(default=15.0, gt=0, le=3600)
    """The longest a worker's start waits on its warm-up (a database or an embedder that
    does not answer); past it the worker starts cold and polls."""
    context_time_budget_ms: float = Field(default=50.0, ge=0)
    """Time assembling a model call's context may take: a recall still running then is
    not waited for, the step goes on with the recent messages and the running summary and
    records a ``context_degraded`` event. 0: no budget."""
    context_cache_sessions: int = Field(default=512, ge=0)
    """Sessions whose packed context a worker keeps between steps (LRU); 0 keeps none."""
    context_cache_mb: int = Field(default=64, ge=1)
    """Memory the kept contexts and recall results may take (approximate MiB, LRU)."""
    context_recall_seconds: float = Field(default=30.0, ge=0)
    """How long a recall for unchanged text is reused (memories other sessions write
    meanwhile show after at most this long; forgotten ones never)."""
    embedding_cache_entries: int = Field(default=4096, ge=0)
    """Embeddings of repeated text a worker keeps (by text hash and embedder)."""

    # Memory
    embedder: Literal["hashing", "openai", "local"] = "hashing"
    embedding_dim: int = 384
    embedding_base_url: str | None = None
    embedding_model: str = "text-embedding-3-small"
    memory_redact: bool = False
    """Whether secrets and personal data (keys, tokens, passwords, emails, card and phone
    numbers: ``activities/memory/redact.py``) are replaced by ``[redacted:<kind>]`` before a
    memory is stored, by every writer (the ``remember`` tool, outcomes, the API, the CLI).
    Off by default: two subjects that differ only in what is redacted become one subject,
    so a memory about one supersedes a memory about the other."""
    memory_ef_search: int = Field(default=0, ge=0, le=1000)
    """``hnsw.ef_search`` of recall's vector search. 0 follows the agent's memory count:
    ``40 * sqrt(memories / 5000)`` within 40..1000 (40 up to 5k memories, 179 at 100k,
    566 at 1M), which keeps recall@10 near 0.98; a number fixes it (higher: better recall,
    slower search)."""

    # Payload encryption (everything vigil puts in Temporal except search attributes)
    payload_encryption: bool = True
    """Encrypt payloads when a key is known; false writes them in plain (and still reads
    encrypted ones with the keys it has)."""
    payload_keys: SecretStr | None = None
    """``id:base64key[,id:base64key...]`` (AES keys of 16, 24 or 32 bytes); old ids stay
    listed so old payloads stay readable. Unset means ``<state_dir>/payload-keys.json``."""
    payload_key_id: str | None = None
    """The key new payloads are encrypted with; may be omitted when there is one key."""
    codec_host: str = "127.0.0.1"
    codec_port: int = 8234
    """Where ``vigil codec-server`` (started by ``vigil stack up``) listens."""
    codec_token: SecretStr | None = None
    """Access token the codec server demands; unset means ``<state_dir>/codec-token``."""
    codec_cors_origins: str = ""
    """Comma-separated extra browser origins allowed to call the codec server (Temporal
    UI's own origin is always allowed)."""
    codec_ui: bool = True
    """Point the embedded Temporal UI at the codec server (its settings then carry the
    access token: whoever can open that UI sees plaintext)."""
    # The worker's Temporal options (workers/temporal.py new_worker); README "Performance".
    worker_max_cached_workflows: int = Field(default=1000, ge=0)
    """Sessions a worker keeps in memory between workflow tasks (sticky cache). Each costs
    memory while cached; an evicted one is replayed from its history on its next wake."""
    worker_gc_freeze: bool = True
    """Before it polls, the worker moves what it holds once started (modules, clients,
    warmed caches: about 200,000 objects) out of the garbage collector's scans
    (``gc.freeze``), so a full collection walks only what its sessions made since. Frozen
    objects are still freed when nothing refers to them; one that later becomes garbage
    only as part of a reference cycle stays (bounded by what the start made). ``false``
    leaves them in every scan."""
    worker_workflow_sandbox: bool = False
    """Run sessions inside Temporal's workflow sandbox. Off by default: the workflows are
    vigil's own code (agents and tools run in activities), and the sandbox costs CPU on
    every run and workflow task (README "Performance"); the test suite replays every
    recorded history inside the sandbox, so a non-deterministic call fails there."""
    worker_inline_workflow_tasks: bool = True
    """Run each workflow task on the worker's event loop instead of handing it to a thread
    and back: the hand-off cost a one-step session about a sixth of the worker's CPU here
    (README "Performance"). It is the SDK's debug mode, which also turns off the SDK's 2 s
    deadlock check (a workflow that blocks stalls the worker's loop instead of failing its
    task; vigil's workflows are its own code and do no I/O) and installs a process-wide
    ``breakpoint()`` hook. An activation that takes long holds the loop, and the
    activities on it, for that long (on a thread, CPython would hand the GIL back to the
    loop every 5 ms): a 190-step session replayed after eviction held it up to 21 ms at
    once (README "Performance", ``bench/replay_wake.py``). Ignored with the
    sandbox on (whose first task of a run re-imports the workflow modules, and which debug
    mode would relax); ``TEMPORAL_DEBUG`` in the environment turns it on whatever this says."""
    worker_max_concurrent_workflow_tasks: int | None = Field(default=None, ge=1)
    """Workflow tasks a worker runs at once; unset means the SDK's default (100)."""
    worker_max_concurrent_activities: int = Field(default=50, ge=1)
    """Activities (model calls, tools, records) a worker runs at once."""
    worker_graceful_shutdown_seconds: float = Field(default=10.0, ge=0, le=3600)
    """How long a worker told to stop (SIGTERM, SIGINT) lets the model and tool calls it is
    running finish, having stopped taking new ones; those still running then are cut off
    and go to another worker, the attempt not counted against their failure budget (up to
    three cut-offs a call). Keep it under the time your process manager waits before it
    kills (Kubernetes: 30 s by default)."""
    worker_db_pool_size: int = Field(default=20, ge=1)
    """PostgreSQL connections a worker keeps open for its activities; as many more are
    opened in a burst and closed when it has passed. Each activity holds one only while a
    statement or a short transaction runs; a burst of many sessions starting at once ran
    past the former 10 and opened and closed ten connections a burst of sixty (README
    "Performance"). Mind the server's ``max_connections`` (100 by default; the embedded
    stack's 200) across workers, the API and the CLI: a worker uses at most twice this."""
    worker_workflow_pollers: int | None = Field(default=None, ge=1)
    """Concurrent long polls for workflow tasks; unset means the SDK's default (5)."""
    worker_activity_pollers: int | None = Field(default=None, ge=1)
    """Concurrent long polls for activity tasks; unset means the SDK's default (5)."""

    # Reconciling the record with Temporal (workers/reconcile.py)
    reconcile_seconds: float = 300.0
    """How often each `vigil worker` closes sessions whose workflow ended outside vigil's
    control (terminated, timed out, deleted); 0 turns it off."""

    # HTTP API (`vigil api`)
    api_host: str = "127.0.0.1"
    """Where the API listens; loopback unless an operator opens it on purpose."""
    api_port: int = 8240
    api_in_stack: bool = True
    """`vigil stack up` also starts the API (and `down` stops it)."""
    api_db_pool_size: int = Field(default=20, ge=1)
    """PostgreSQL connections the API server may keep open, opened as its requests need
    them and kept; a request past them waits for one, 30 s at most, then is a 503 (a
    request holds one while its statements run; an export, while it streams). Before, as
    many more were opened in a burst and closed after it: a burst of 30 starts at once
    opened and closed 10-18 connections, a server process and its authentication each.
    Counted twice (the record's statements and the agent-bound
    reads have a pool each) with the workers' against the server's ``max_connections``."""
    db_connect_seconds: float = Field(default=10.0, gt=0, le=600)
    """How long a command's, and the API's, new PostgreSQL connection waits for the
    server's answer (the connection, TLS and the login) before the part is reported not
    answering: a server that takes the connection and says nothing (stopped, its host
    gone) held a command the driver's 60 s. Raise it for a server that takes long to
    wake (one paused when idle). Workers wait the driver's 60 s."""
    api_max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body the API reads (uploads of artifacts stream and are not bound by it)."""
    api_max_upload_bytes: int = 1024 * 1024 * 1024
    """Largest artifact the API accepts in one upload (streamed to the store, never held)."""
    api_max_streams_per_token: int = Field(default=16, ge=1)
    """Event streams (``/stream``) one token may hold open at once; one more is a 429.
    Each open stream holds its catch-up and its queue in the API (megabytes when a client
    does not read): without a bound one read token could take the API's memory."""
    api_max_streams: int = Field(default=256, ge=1)
    """Event streams the API holds open at once, whoever opened them; one more is a 503."""
    api_sse_heartbeat_seconds: float = 15.0
    """A comment line on an idle event stream this often, so proxies keep the connection
    and a follower that went away is noticed (and its subscription freed)."""

    # Telemetry (workers/telemetry.py): all off unless configured, and then nothing is imported
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "VIGIL_OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    """Base URL of an OTLP/HTTP collector (``http://host:4318``); traces go to
    ``<url>/v1/traces``. Unset: no tracing at all."""
    otel_service_name: str | None = Field(
        default=None, validation_alias=AliasChoices("VIGIL_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME")
    )
    """The traces' service name; unset means ``vigil-worker``, ``vigil-api`` or ``vigil``."""
    worker_metrics_port: int | None = None
    """Where `vigil worker` serves Prometheus metrics (Temporal SDK's and vigil's own, one
    endpoint: ``http://<metrics_host>:<port>/metrics``). Unset: no metrics, no cost."""
    metrics_host: str = "127.0.0.1"
    """The address the worker's metrics endpoint binds (loopback unless opened on purpose)."""

    # Logging
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    @field_validator("payload_keys")
    @classmethod
    def _keys_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_payload_keys(value.get_secret_value())
        return value

    @field_validator("http_allow")
    @classmethod
    def _valid_allowlist(cls, value: str) -> str:
        from vigil.activities.tools.allowlist import parse_allowlist

        parse_allowlist(value)  # ValueError naming the bad entry
        return value

    @property
    def tool_module_list(self) -> list[str]:
        return [m.strip() for m in self.tool_modules.split(",") if m.strip()]

    @property
    def http_allowlist(self) -> list[str]:
        return [h.strip().lower() for h in self.http_allow.split(",") if h.strip()]

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def resolved_bin_cache(self) -> Path:
        return self.bin_cache.expanduser().resolve()

    def no_database(self) -> str:
        """What is said when no database is known: where the stack's state was looked for,
        and how to name one started from another folder."""
        return (
            f"no database: set DATABASE_URL, or run `vigil stack up` (no stack's state in "
            f"{self.resolved_state_dir}; for a stack started from another folder, set "
            "VIGIL_STATE_DIR to its .vigil folder)"
        )

    def stack_info(self) -> StackInfo | None:
        """What the embedded stack in ``state_dir`` published about itself, if it is there."""
        path = self.resolved_state_dir / STACK_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return StackInfo(**{k: v for k, v in data.items() if k in StackInfo.__dataclass_fields__})

    @model_validator(mode="after")
    def _stack_ports(self) -> Settings:
        """The ports the stack in ``state_dir`` was started on, for those not configured
        here: a shell without the ``VIGIL_*_PORT`` variables ``stack up`` was given reaches
        the same Temporal, PostgreSQL, MinIO, codec server and API (and links to its UI)
        as the database URL the stack published. A port given here wins."""
        try:
            info = self.stack_info()
        except (OSError, ValueError, TypeError):
            return self  # unreadable: `stack up` writes it again; reads say what is wrong
        for name, port in ((info.ports if info else None) or {}).items():
            usable = isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
            if name in STACK_PORTS and name not in self.model_fields_set and usable:
                object.__setattr__(self, name, port)  # not "set": a copy adopts the file's too
        return self

    def _given_port(self, url: str, setting: str) -> str:
        """``url`` (``scheme://...`` or ``host:port``) on the port ``setting`` gives, when
        it is set here."""
        if setting not in self.model_fields_set:
            return url
        port = getattr(self, setting)
        parts = urlsplit(url if "//" in url else f"//{url}")
        host = parts.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
        moved = urlunsplit(parts._replace(netloc=netloc))
        return moved if "//" in url else moved.removeprefix("//")

    def endpoints(self) -> Endpoints:
        """Concrete endpoints: explicit configuration first, then the embedded stack's."""
        info = self.stack_info()
        temporal = self.temporal_address or f"127.0.0.1:{self.temporal_port}"
        if self.temporal_ui_url:
            ui = self.temporal_ui_url.rstrip("/")
        elif self.temporal_address is None:
            ui = f"http://127.0.0.1:{self.temporal_ui_port}"
        else:
            ui = None
        # The stack's published URLs name the ports it was started on; a port given here
        # wins (as it does for Temporal's), so a command never reaches one part elsewhere
        # than `stack status` and doctor look for it.
        if self.database_url is not None:
            db = self.database_url.get_secret_value()
        elif info is not None and info.database_url:
            db = self._given_port(info.database_url, "postgres_port")
        else:
            db = None
        s3_endpoint = self.s3_endpoint or (
            self._given_port(info.s3_endpoint, "minio_port") if info and info.s3_endpoint else None
        )
        access = (
            self.s3_access_key.get_secret_value()
            if self.s3_access_key
            else (info.s3_access_key if info else None)
        )
        secret = (
            self.s3_secret_key.get_secret_value()
            if self.s3_secret_key
            else (info.s3_secret_key if info else None)
        )
        return Endpoints(
            temporal_address=temporal,
            temporal_ui=ui,
            database_url=db,
            s3_endpoint=s3_endpoint,
            s3_access_key=access,
            s3_secret_key=secret,
            artifact_dir=(self.artifact_dir or self.resolved_state_dir / "artifacts")
            .expanduser()
            .resolve(),
        )


@dataclass(frozen=True)
class StackInfo:
    """Published by ``vigil stack up`` into ``<state_dir>/stack.json`` (mode 0600)."""

    database_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    temporal_address: str | None = None
    profile: str | None = None
    """The stack profile it was started with (``embedded`` or ``cluster``)."""
    ports: dict[str, int] | None = None
    """The ``STACK_PORTS`` settings it was started with."""


@dataclass(frozen=True)
class Endpoints:
    """Where each part lives once configuration and the embedded stack are combined."""

    temporal_address: str
    temporal_ui: str | None
    database_url: str | None
    s3_endpoint: str | None
    s3_access_key: str | None
    s3_secret_key: str | None
    artifact_dir: Path


def parse_payload_keys(text: str) -> dict[str, bytes]:
    """``id:base64key,...`` -> {id: key}; raises ValueError naming the bad entry (never the key)."""
    keys: dict[str, bytes] = {}
    for number, entry in enumerate((e.strip() for e in text.split(",") if e.strip()), 1):
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"VIGIL_PAYLOAD_KEYS entry {number} is not `id:base64key` "
                "(id of letters, digits, '.', '_', '-')"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"VIGIL_PAYLOAD_KEYS key {key_id!r} is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise ValueError(
                f"VIGIL_PAYLOAD_KEYS key {key_id!r} has {len(key)} bytes; AES needs 16, 24 or 32"
            )
        if key_id in keys:
            raise ValueError(f"VIGIL_PAYLOAD_KEYS names key {key_id!r} twice")
        keys[key_id] = key
    return keys


def sqlalchemy_url(url: str) -> str:
    """Make any ``postgres://`` / ``postgresql://`` URL use the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def asyncpg_dsn(url: str) -> str:
    """The plain libpq form of a database URL, for asyncpg.connect."""
    if url.startswith("postgresql+asyncpg://"):
        return "postgresql://" + url[len("postgresql+asyncpg://") :]
    return url
