"""`vigil stack up | down | status | rotate-key | env | psql`: the local stack without Docker."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    JsonOpt,
    S3Opt,
    StateOpt,
    ToolsOpt,
    as_invoked,
    err,
    fail,
    load_settings,
    out,
    plain,
    say,
)

if TYPE_CHECKING:
    from vigil.workers.stack import Stack

stack_app = typer.Typer(help="The local stack without Docker.", no_args_is_help=True)


ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="embedded: the Temporal dev server (SQLite); cluster: the real Temporal server "
        "on PostgreSQL with Temporal UI (env VIGIL_STACK_PROFILE).",
    ),
]


@stack_app.command("up")
def stack_up(
    state_dir: StateOpt = None,
    with_minio: S3Opt = False,
    as_json: JsonOpt = False,
    profile: ProfileOpt = None,
    tools: ToolsOpt = None,
) -> None:
    """Start Temporal, PostgreSQL (+pgvector) and, when asked, MinIO; migrate; wait until ready."""
    from vigil.workers.stack import Stack, StackError

    settings = load_settings(state_dir, with_minio)
    if tools:  # for the API it starts (a running one keeps the modules it started with)
        from vigil.workers.tool_wiring import with_worker_flags

        settings = with_worker_flags(settings, tools, None, False)
    if profile is not None:
        if profile not in ("embedded", "cluster"):
            fail(f"unknown profile {profile!r}: embedded or cluster", EXIT_USAGE)
        settings = settings.model_copy(update={"stack_profile": profile})
        settings.model_fields_set.add("stack_profile")
    stack = Stack(settings, say=say)
    try:
        stack.up()
    except StackError as exc:
        fail(str(exc), EXIT_FAILED)
    except Exception as exc:  # a part's own failure (an object store that refuses...)
        from vigil.activities.failures import describe

        fail(
            f"the stack did not come up: {describe(exc)} (each part's log is in "
            f"{settings.resolved_state_dir / 'logs'}; `vigil stack status` says what runs)",
            EXIT_FAILED,
        )
    _print_status(stack, as_json)


@stack_app.command("down")
def stack_down(state_dir: StateOpt = None) -> None:
    """Stop every part of the embedded stack; data stays in the state folder."""
    from vigil.workers.liveness import still_polling
    from vigil.workers.stack import Stack

    settings = load_settings(state_dir)
    stack = Stack(settings, say=say)
    # Workers of this queue lose Temporal with the stack: asked before it goes.
    polling = still_polling(settings) if stack.embedded_temporal else None
    try:
        left = stack.down()
    except Exception as exc:
        from vigil.activities.failures import describe

        fail(f"the stack did not stop: {describe(exc)}", EXIT_FAILED)
    if left:
        fail(
            f"the stack did not stop: {', '.join(left)} still running (their pid files are "
            f"in {settings.resolved_state_dir / 'run'}; PostgreSQL's in its data folder)",
            EXIT_FAILED,
        )
    err.print("stack stopped")
    if polling:
        err.print(Text(left_running(polling, settings.task_queue), style="yellow"))


def left_running(identities: list[str], task_queue: str) -> str:
    """The line `stack down` says of the workers that polled its Temporal."""
    many = len(identities) > 1
    return (
        f"{len(identities)} worker{'s still poll' if many else ' still polls'} task queue "
        f"{task_queue!r} ({', '.join(identities)}): {'they wait' if many else 'it waits'} for "
        f"Temporal to come back; stop {'them' if many else 'it'} with Ctrl-C where "
        f"{'they run' if many else 'it runs'}"
    )


@stack_app.command("status")
def stack_status(
    state_dir: StateOpt = None, with_minio: S3Opt = False, as_json: JsonOpt = False
) -> None:
    """Show each part and whether it answers."""
    from vigil.workers.stack import Stack

    stack = Stack(load_settings(state_dir, with_minio))
    if not _print_status(stack, as_json):
        raise typer.Exit(EXIT_FAILED)


def _print_status(stack: Stack, as_json: bool) -> bool:
    parts = stack.status()
    if as_json:
        out.print_json(json.dumps([asdict(p) for p in parts]))
    else:
        table = Table("part", "mode", "state", "where")
        for part in parts:
            state = "[green]up[/]" if part.running else "[red]down[/]"
            name, mode, detail = plain(part.name, part.mode, part.detail)
            table.add_row(name, mode, state, detail)
        out.print(table)
        ui = stack.settings.endpoints().temporal_ui
        if ui:
            out.print(f"Temporal UI: {ui}")
        logs = stack.settings.resolved_state_dir / "logs"
        if logs.is_dir():
            kept = ", ".join(sorted(f.name for f in logs.glob("*.log")))
            out.print(Text(f"Logs of the parts it runs: {logs} ({kept})"))
    return all(p.running for p in parts)


@stack_app.command("rotate-key")
def stack_rotate_key(state_dir: StateOpt = None) -> None:
    """Add a new payload key to the stack's key file and make it current (old keys stay)."""
    from vigil.workers.codec import rotate_key_file

    settings = load_settings(state_dir)
    if settings.payload_keys is not None:
        fail("keys come from VIGIL_PAYLOAD_KEYS: add a key there and set VIGIL_PAYLOAD_KEY_ID")
    key_id = rotate_key_file(settings.resolved_state_dir)
    err.print(f"new payload key {key_id} is current; restart workers to encrypt with it")


@stack_app.command("env")
def stack_env(state_dir: StateOpt = None) -> None:
    """Shell exports that make the plain `temporal` CLI reach this stack.

    `eval "$(vigil stack env)"` puts the cached binary on PATH and sets the address,
    namespace and codec."""
    import shlex
    import shutil

    from vigil.workers.settings import CODEC_TOKEN_FILE
    from vigil.workers.stack.services import TEMPORAL_VERSION

    settings = load_settings(state_dir)
    lines = []
    if shutil.which("temporal") is None:
        folder = settings.resolved_bin_cache / f"temporal-{TEMPORAL_VERSION}"
        if (folder / "temporal").exists():
            lines.append(f'export PATH={shlex.quote(str(folder))}:"$PATH"')
        else:
            err.print(
                as_invoked("the temporal binary is not built yet: `vigil stack up` builds it")
            )
    lines.append(f"export TEMPORAL_ADDRESS={shlex.quote(settings.endpoints().temporal_address)}")
    lines.append(f"export TEMPORAL_NAMESPACE={shlex.quote(settings.temporal_namespace)}")
    # The codec server shows payloads decrypted; the token is read from its file when the
    # line runs, never printed.
    token_file = settings.resolved_state_dir / CODEC_TOKEN_FILE
    if settings.codec_token is None and token_file.exists():
        lines.append(
            "export TEMPORAL_CODEC_ENDPOINT="
            + shlex.quote(f"http://{settings.codec_host}:{settings.codec_port}")
        )
        lines.append(
            'export TEMPORAL_CODEC_AUTH="Bearer $(cat '
            + shlex.quote(str(token_file)).replace('"', '\\"')
            + ')"'
        )
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@stack_app.command(
    "psql",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def stack_psql(ctx: typer.Context, state_dir: StateOpt = None) -> None:
    """psql on the stack's database; other arguments pass on.

    The embedded PostgreSQL's psql, else the one on PATH: `vigil stack psql -c 'SELECT 1'`."""
    import os
    from urllib.parse import unquote, urlsplit, urlunsplit

    from vigil.workers.cli.common import EXIT_UNREACHABLE
    from vigil.workers.settings import asyncpg_dsn

    settings = load_settings(state_dir)
    url = settings.endpoints().database_url
    if url is None:
        fail(settings.no_database(), EXIT_UNREACHABLE)
    psql = _psql_binary()
    if psql is None:
        fail("no psql found: install PostgreSQL's client, or `uv sync` for the embedded one")
    # The password travels in the environment, never on a command line `ps` shows.
    parts = urlsplit(asyncpg_dsn(url))
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{user}{host}{port}")
    os.execve(psql, [psql, urlunsplit(parts), *ctx.args], env)


def _psql_binary() -> str | None:
    import shutil

    from vigil.workers.stack.postgres import bin_dir
    from vigil.workers.stack.procs import StackError

    try:
        bundled = bin_dir() / "psql"
    except StackError:
        bundled = None
    if bundled is not None and bundled.exists():
        return str(bundled)
    return shutil.which("psql")
