"""`vigil doctor`: checks each part for real and reports a table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vigil.workers.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client

T = TypeVar("T")


@dataclass
class Check:
    part: str
    check: str
    ok: bool
    detail: str


async def _temporal(settings: Settings) -> list[Check]:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

    from vigil.workers.liveness import is_unreachable
    from vigil.workers.temporal import connect, missing_search_attributes

    address = settings.endpoints().temporal_address
    try:
        client = await asyncio.wait_for(connect(settings), 10)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    except Exception as exc:
        from vigil.workers.liveness import temporal_down

        down = is_unreachable(exc) or isinstance(exc, TimeoutError)
        detail = temporal_down(address) if down else f"{address}: {exc}"
        return [Check("temporal", "reachable", False, detail.splitlines()[0])]
    checks = [Check("temporal", "reachable", True, f"{address}, server {info.server_version}")]
    try:
        missing = await missing_search_attributes(client)
        checks.append(
            Check(
                "temporal",
                f"namespace {settings.temporal_namespace!r} + search attributes",
                not missing,
                "all registered" if not missing else f"missing: {', '.join(missing)}",
            )
        )
    except Exception as exc:
        checks.append(Check("temporal", "search attributes", False, str(exc)[:200]))
    checks.append(await _workers(settings, client))
    return checks


async def _workers(settings: Settings, client: Client) -> Check:
    """A session on a queue nobody polls never moves: say so, with the command to run.
    Workers of one queue that load different tools fail too: a session's tool call goes
    to any of them, and one without the tool answers the model that it is not loaded."""
    from vigil.workers.liveness import gone_here, no_worker, pollers, split_identity

    queue = settings.task_queue
    what = f"workers on task queue {queue!r}"
    try:
        found = await pollers(client, queue)
    except Exception as exc:
        return Check("temporal", what, False, str(exc).splitlines()[0][:200])
    # Temporal lists a worker for a while after it stopped. The embedded stack's server,
    # on this host's loopback, is polled by this host's processes: a worker named after one
    # that no longer runs here is said so, not counted. (Another Temporal, or one reached
    # from a container that shares the host's name but not its processes: never judged.)
    here = _embedded_temporal_here(settings)
    gone = [p for p in found if here and gone_here(p.identity)]
    found = [p for p in found if p not in gone]
    stopped = ""
    if gone:
        pids = ", ".join(sorted(split_identity(p.identity)[0] for p in gone))
        stopped = f"; Temporal still lists {len(gone)} whose process no longer runs ({pids})"
    if not found:
        return Check(
            "temporal", what, False, no_worker(queue, queue, what="sessions cannot run") + stopped
        )
    now = datetime.now(UTC)
    shown: list[str] = []
    digests: set[str] = set()
    for poller in sorted(found, key=lambda p: p.identity):
        who, tools = split_identity(poller.identity)
        notes = [f"tools {tools}"] if tools else []
        if tools:
            digests.add(tools)
        if poller.seen is not None:
            notes.append(f"seen {max(0, round((now - poller.seen).total_seconds()))} s ago")
        shown.append(f"{who} ({', '.join(notes)})" if notes else who)
    listed = f"{len(found)} polling: {', '.join(shown)}{stopped}"
    if len(digests) > 1:
        return Check(
            "temporal",
            what,
            False,
            f"{listed}; they load {len(digests)} different sets of tools, and a tool call "
            "goes to any of them (one without the tool tells the model it is not loaded): "
            "start each with the same --tools, or give each set its own --task-queue",
        )
    return Check("temporal", what, True, listed)


def _embedded_temporal_here(settings: Settings) -> bool:
    """Whether the Temporal in use is the embedded stack's of this state folder (which
    listens on this host's loopback only)."""
    info = settings.stack_info()
    return info is not None and info.temporal_address == settings.endpoints().temporal_address


def _not_answering(exc: OSError) -> str:
    """PostgreSQL refused the connection or did not answer: where, why and what to do, as
    other commands say it (the raw ``[Errno 111] Connect call failed`` told none of it).
    Other errors (TLS, a name that does not resolve) keep their own words."""
    from vigil.activities.failures import address_of

    at = address_of(exc)
    why = os.strerror(exc.errno) if exc.errno else "no answer"
    where = f" at {at[0]}:{at[1]}" if at else ""
    return (
        f"cannot reach PostgreSQL{where} ({why}); start it with `vigil stack up` "
        "(or check DATABASE_URL)"
    )


async def _postgres(settings: Settings) -> list[Check]:
    import asyncpg

    from vigil.workers.db import head_revision
    from vigil.workers.settings import asyncpg_dsn

    url = settings.endpoints().database_url
    if url is None:
        return [
            Check(
                "postgres",
                "configured",
                False,
                "no DATABASE_URL and no embedded server: run `vigil stack up`",
            )
        ]
    try:
        conn = await asyncio.wait_for(asyncpg.connect(asyncpg_dsn(url)), 10)
    except (ConnectionRefusedError, TimeoutError) as exc:
        return [Check("postgres", "reachable", False, _not_answering(exc))]
    except Exception as exc:
        return [Check("postgres", "reachable", False, str(exc).splitlines()[0][:200])]
    try:
        version = await conn.fetchval("SHOW server_version")
        checks = [Check("postgres", "reachable", True, f"PostgreSQL {version}")]
        vector = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname='vector'")
        checks.append(
            Check(
                "postgres",
                "pgvector",
                vector is not None,
                f"vector {vector}" if vector else "extension missing",
            )
        )
        head = head_revision()
        try:
            current = await conn.fetchval("SELECT version_num FROM alembic_version")
        except asyncpg.UndefinedTableError:
            current = None
        checks.append(
            Check("postgres", "migrations at head", current == head, f"at {current}, head {head}")
        )
    finally:
        await conn.close()
    return checks


def _artifacts(settings: Settings) -> list[Check]:
    from vigil.workers.wiring import make_store

    root = settings.endpoints().artifact_dir
    if settings.artifact_backend == "fs" and not root.exists():
        # Not made here: a doctor run in the wrong folder left an empty store behind.
        parent = next(p for p in root.parents if p.exists())
        ok = os.access(parent, os.W_OK)
        said = "writable" if ok else "not writable"
        detail = f"{root} is not there yet (made on the first write; {parent} is {said})"
        return [Check("artifacts", "fs store writable", ok, detail)]
    try:
        store = make_store(settings)
        probe = f"vigil doctor probe {uuid.uuid4()}".encode()
        obj = store.put_bytes(probe)
        ok = store.get_bytes(obj.sha256) == probe
        store.delete(obj.sha256)
        return [Check("artifacts", f"{store.scheme} store writable", ok, obj.uri.rsplit("/", 1)[0])]
    except Exception as exc:
        return [
            Check(
                "artifacts",
                f"{settings.artifact_backend} store writable",
                False,
                str(exc).splitlines()[0][:200],
            )
        ]


def _encryption(settings: Settings) -> list[Check]:
    from vigil.workers.codec import load_keyring

    try:
        ring = load_keyring(settings)
    except Exception as exc:  # unreadable key file, unknown current key
        return [Check("temporal", "payload keys", False, str(exc).splitlines()[0][:200])]
    if ring is None:
        detail = "off: no keys (VIGIL_PAYLOAD_KEYS, or `vigil stack up` generates one)"
    elif not settings.payload_encryption:
        detail = f"off (VIGIL_PAYLOAD_ENCRYPTION=false); reads {len(ring.keys)} key(s)"
    else:
        detail = f"on: AES-GCM, key {ring.current} ({len(ring.keys)} key(s) for reading)"
    return [Check("temporal", "payload encryption", True, detail)]


def _models(settings: Settings) -> list[Check]:
    """Whether the model connections are set up as a worker would read them (a worker
    refuses to start on a mistake there)."""
    from vigil.activities.credentials import ENV_PREFIX
    from vigil.activities.models.connections import script_path
    from vigil.workers.models import ConfigError, model_connections

    try:
        connections = model_connections(settings)
    except ConfigError as exc:
        return [Check("models", "connections", False, str(exc).splitlines()[0][:200])]
    for name, conn in sorted(connections.items()):
        path = script_path(conn.base_url) if conn.kind == "scripted" else None
        if path is not None and not path.is_file():
            why = f"model connection {name!r}: its script {path} does not exist"
            return [Check("models", "connections", False, why)]
        credential = conn.credential or ""
        variable = credential.removeprefix(ENV_PREFIX)
        if credential.startswith(ENV_PREFIX) and not os.environ.get(variable):
            # A worker started from this environment would wait on every call of it.
            why = (
                f"model connection {name!r}: its credential {conn.credential!r} is not set "
                f"here (export {variable} where workers run)"
            )
            return [Check("models", "connections", False, why)]
    return [Check("models", "connections", True, ", ".join(sorted(connections)))]


async def run_checks(settings: Settings) -> list[Check]:
    keys = _encryption(settings)
    # A client cannot be built without its keys: the key check says why, not "unreachable".
    temporal = _temporal(settings) if keys[0].ok else asyncio.sleep(0, result=[])
    results = await asyncio.gather(temporal, _postgres(settings))
    artifacts = await asyncio.to_thread(_artifacts, settings)
    # Agent definitions are read only from a database that answered at its head.
    database_ok = all(c.ok for c in results[1])
    tools = await _mcp_commands(settings) if database_ok else []
    connections = await _agent_connections(settings) if database_ok else []
    secrets = await _secrets(settings) if database_ok else []
    return [
        *_profile(settings),
        *await asyncio.to_thread(_api, settings),
        *results[0],
        *keys,
        *results[1],
        *artifacts,
        *tools,
        *_models(settings),
        *connections,
        *secrets,
        *_telemetry(settings),
    ]


async def _read_record(settings: Settings, read: Callable[[Any], Awaitable[T]]) -> T | str:
    """``read`` of the record (the agents' definitions), or the first line of why it
    failed; called once the PostgreSQL checks passed."""
    from vigil.workers.db import make_engine, make_sessionmaker

    url = settings.endpoints().database_url
    assert url is not None  # the PostgreSQL checks passed
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as db:
            return await read(db)
    except Exception as exc:
        return str(exc).splitlines()[0][:200]
    finally:
        await engine.dispose()


async def _agent_connections(settings: Settings) -> list[Check]:
    """Whether the model connection (and fallback) each agent's newest version names is
    one configured here: a worker without it leaves that agent's model calls waiting for
    one that has it."""
    from vigil.activities.models.connections import DEFAULT_CONNECTION
    from vigil.activities.record import agents as agent_rows
    from vigil.workers.models import ConfigError, model_connections

    try:
        configured = model_connections(settings)
    except ConfigError:
        return []  # the models check says what is wrong
    named = await _read_record(settings, agent_rows.newest_model_connections)
    if isinstance(named, str):
        return [Check("models", "agents' connections", False, named)]
    missing, modelless = [], []
    for agent, version, connection, fallback, model in named:
        # A fallback is called with its connection's default model.
        for kind, name, own in (
            ("connection", connection or DEFAULT_CONNECTION, model),
            ("fallback", fallback, None),
        ):
            if name is None:
                continue
            found = configured.get(name)
            if found is None:
                missing.append(f"{agent} (version {version}) names {kind} {name!r}")
            elif not own and not found.model:
                modelless.append(f"{agent} (version {version}) names {kind} {name!r}")
    problems = []
    if missing:
        problems.append(f"not configured here: {'; '.join(missing)}")
    if modelless:
        # Its calls would wait for a worker whose connection names one.
        problems.append(
            f"a connection without a default model, and no model of the agent's own: "
            f'{"; ".join(modelless)} (give the connection a "model")'
        )
    if problems:
        return [Check("models", "agents' connections", False, "; ".join(problems))]
    return [Check("models", "agents' connections", True, f"{len(named)} agent(s)")]


async def _secrets(settings: Settings) -> list[Check]:
    """Whether the secrets that model connections and webhooks name can be had here: an
    ``env:`` variable set in this environment (webhooks'; connections' are the models
    check's), any other name stored (`vigil secret set`). Without it every call of the
    connection waits, and every delivery of the webhook fails, for as long as it is so."""
    from vigil.activities.credentials import ENV_PREFIX
    from vigil.activities.record import agents as agent_rows
    from vigil.activities.record import credentials as stored
    from vigil.activities.record import hooks as hook_rows
    from vigil.workers.models import ConfigError, model_connections

    async def read(db: Any) -> tuple[set[str], list[tuple[str, str]]]:
        names = {c.name for c in await stored.list_all(db)}
        named = [
            (f"agent {a} (version {v}) webhook {url[:80]}", secret)
            for a, v, url, secret in await agent_rows.newest_webhook_secrets(db)
        ]
        named += [
            (f"webhook {w.id} of agent {w.agent_id}", w.secret_ref)
            for w in await hook_rows.list_webhooks(db)
        ]
        return names, named

    found = await _read_record(settings, read)
    if isinstance(found, str):
        return [Check("credentials", "secrets named", False, found)]
    names, named = found
    with contextlib.suppress(ConfigError):  # the models check says what is wrong
        named += [
            (f"model connection {c.name!r}", c.credential)
            for c in model_connections(settings).values()
            if c.credential
        ]
    problems = []
    for what, ref in named:
        if ref.startswith(ENV_PREFIX):
            variable = ref.removeprefix(ENV_PREFIX)
            if not what.startswith("model connection") and not os.environ.get(variable):
                problems.append(f"{what}: {ref!r} is not set here (export {variable})")
        elif ref not in names:
            problems.append(f"{what}: no stored credential {ref!r} (vigil secret set {ref})")
    if problems:
        return [Check("credentials", "secrets named", False, "; ".join(problems))]
    return [Check("credentials", "secrets named", True, f"{len(named)} named, all here")]


async def _mcp_commands(settings: Settings) -> list[Check]:
    """Whether the stdio MCP servers of every agent's newest version can be started here:
    each command found as a worker on this host would start it (a bare ``python`` is the
    worker's own). Workers and the API on other hosts resolve them on theirs."""
    from vigil.activities.record import agents as agent_rows
    from vigil.activities.tools.mcp_connection import stdio_command
    from vigil.schema.agents import McpServerSpec

    servers = await _read_record(settings, agent_rows.newest_mcp_servers)
    if isinstance(servers, str):
        return [Check("tools", "MCP server commands", False, servers)]
    checks: list[Check] = []
    found = 0
    for agent_id, version, data in servers:
        spec = McpServerSpec.model_validate(data)
        if not spec.command:
            continue  # a server over HTTP: nothing to start here
        command = stdio_command(spec)
        if shutil.which(command[0], path=spec.env.get("PATH")) is None:
            where = "its env's PATH" if "PATH" in spec.env else "this host's PATH"
            why = f"version {version}: command {command[0]!r} not found on {where}"
        elif (script := _missing_script(command[1:])) is not None:
            # A worker starts it in its own folder: a relative script is looked for there.
            why = f"version {version}: its script {script!r} is not found from {Path.cwd()}"
        else:
            found += 1
            continue
        checks.append(Check("tools", f"MCP server {agent_id}.{spec.name}", False, why))
    if not checks:
        detail = f"{found} found on this host" if found else "no agent starts one"
        checks.append(Check("tools", "MCP server commands", True, detail))
    return checks


_SCRIPTS = (".py", ".js", ".mjs", ".cjs", ".ts")
"""What a stdio MCP server's command runs as a file of its own (``python tools.py``)."""


def _missing_script(args: list[str]) -> str | None:
    """The first argument naming a script file that is not there (from this folder)."""
    for arg in args:
        if arg.endswith(_SCRIPTS) and not arg.startswith("-") and not Path(arg).is_file():
            return arg
    return None


def _telemetry(settings: Settings) -> list[Check]:
    """Whether traces and worker metrics are configured (and where they go): facts, not
    faults, so always ok."""
    from vigil.workers.telemetry import describe

    return [Check("telemetry", what, True, where) for what, where in describe(settings)]


def _api(settings: Settings) -> list[Check]:
    """The stack's API (`vigil stack up` starts it with the rest, VIGIL_API_IN_STACK):
    asked for its health as a caller would. None checked for a stack without one."""
    if not settings.api_in_stack or settings.stack_info() is None:
        return []
    import httpx

    from vigil.workers.stack import Stack

    url = Stack(settings).api.url
    try:
        # Asked directly: a proxy the environment names is not between vigil's parts.
        answer = httpx.get(f"{url}/v1/health", timeout=3.0, trust_env=False)
        ok, detail = answer.status_code == 200, f"{url}/v1 (HTTP {answer.status_code})"
    except Exception as exc:  # refused, timed out, a host that is no URL's: not answering
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        ok, detail = False, f"not answering at {url}/v1 ({why}): `vigil stack up` starts it"
    return [Check("api", "HTTP API", ok, detail)]


def _profile(settings: Settings) -> list[Check]:
    """Which Temporal the stack in the state folder runs (embedded dev server or cluster)."""
    if settings.temporal_address is not None:
        return []
    from vigil.workers.stack import Stack

    stack = Stack(settings)
    if stack.clustered:
        from vigil.workers.stack.cluster import HISTORY_SHARDS, SERVER_VERSION

        up = stack.cluster.running()
        detail = f"Temporal server {SERVER_VERSION}, {HISTORY_SHARDS} shards, on PostgreSQL"
    else:
        up = stack.temporal.running()
        detail = "Temporal dev server (SQLite file)"
    hint = "" if up else f" not running: `vigil stack up --profile {stack.profile}`"
    return [Check("stack", f"profile {stack.profile}", up, detail + hint)]
