"""The long-running and diagnostic commands: `vigil worker`, `demo`, `codec-server`,
`doctor`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ByOpt,
    JsonOpt,
    StateOpt,
    ToolsOpt,
    as_invoked,
    by_default,
    database_refused,
    err,
    fail,
    load_settings,
    out,
    plain,
)


def codec_server(
    host: Annotated[str | None, typer.Option(help="Address (VIGIL_CODEC_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (VIGIL_CODEC_PORT).")] = None,
    state_dir: StateOpt = None,
) -> None:
    """Serve Temporal's codec protocol: decrypted payloads for Temporal UI and the CLI.

    Temporal UI and `temporal --codec-endpoint` show them to an operator with the token."""
    from vigil.workers.codec import PayloadKeyError
    from vigil.workers.codec_server import serve

    settings = load_settings(state_dir)
    host = host or settings.codec_host
    port = port or settings.codec_port
    err.print(
        f"codec server on http://{host}:{port} (token: VIGIL_CODEC_TOKEN or "
        f"{settings.resolved_state_dir}/codec-token)"
    )
    try:
        serve(settings, host, port)
    except PayloadKeyError as exc:
        fail(str(exc), EXIT_USAGE)


def doctor(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Check every part for real: reachable, versions, pgvector, migrations, bucket, attributes."""
    from vigil.workers.doctor import run_checks

    settings = load_settings(state_dir)
    checks = asyncio.run(run_checks(settings))
    for c in checks:  # the commands it names, as this CLI was started (`uv run vigil ...`)
        c.detail = as_invoked(c.detail)
    if as_json:
        out.print_json(json.dumps([asdict(c) for c in checks]))
    else:
        table = Table("part", "check", "result", "detail")
        for c in checks:
            # A detail quotes configuration ("[other] is not a connection"): not markup.
            part, check, detail = plain(c.part, c.check, c.detail)
            table.add_row(part, check, "[green]ok[/]" if c.ok else "[red]FAIL[/]", detail)
        out.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_FAILED)


def worker(
    state_dir: StateOpt = None,
    tools: ToolsOpt = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help="Queue to poll (VIGIL_TASK_QUEUE).")
    ] = None,
    tools_only: Annotated[
        bool,
        typer.Option("--tools-only", help="A tool worker: serve only its tools, no sessions."),
    ] = False,
) -> None:
    """Run a worker: polls the task queue and runs sessions until SIGINT/SIGTERM, then
    lets its running calls finish for VIGIL_WORKER_GRACEFUL_SHUTDOWN_SECONDS (10)."""
    from vigil.workers.codec import PayloadKeyError
    from vigil.workers.logs import configure
    from vigil.workers.tool_wiring import with_worker_flags
    from vigil.workers.worker import run_worker

    settings = with_worker_flags(load_settings(state_dir), tools or [], task_queue, tools_only)
    configure(settings.log_format, settings.log_level)
    from asyncpg import PostgresError
    from sqlalchemy.exc import DBAPIError

    from vigil.activities.memory.provenance import EmbedderNotReady
    from vigil.activities.tools.loader import ToolLoadError
    from vigil.workers.deployments import DeploymentSettingsError
    from vigil.workers.liveness import is_unreachable, temporal_down
    from vigil.workers.models import ConfigError

    try:
        asyncio.run(run_worker(settings))
    except (PayloadKeyError, DeploymentSettingsError, ConfigError) as exc:
        fail(f"bad configuration: {exc}", EXIT_USAGE)
    except ToolLoadError as exc:
        fail(f"worker could not start: {exc}", EXIT_USAGE)
    except EmbedderNotReady as exc:
        fail(f"worker could not start: {exc}", EXIT_USAGE)
    except (OSError, RuntimeError) as exc:
        if is_unreachable(exc):  # the SDK's raw connect error names no fix
            address = settings.endpoints().temporal_address
            fail(f"worker could not start: {temporal_down(address)}", EXIT_UNREACHABLE)
        fail(f"worker could not start: {exc}", EXIT_UNREACHABLE)
    except (DBAPIError, PostgresError) as exc:  # PostgreSQL answered and refused, or went
        database_refused(exc, "worker could not start: ")


def demo(
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve/--ask", help="Approve without asking.")
    ] = True,
    by: ByOpt = "",
    state_dir: StateOpt = None,
) -> None:
    """Run a demo session on the scripted model: one approval, then finish; print the transcript."""
    from vigil.workers.client import VigilError
    from vigil.workers.demo import DemoFailed, run_demo
    from vigil.workers.logs import configure

    settings = load_settings(state_dir)
    # The demo's own worker runs inside it: its logs go to stderr, warnings and worse only
    # (its start-up lines came between the demo's own on stdout).
    configure(settings.log_format, "WARNING")
    try:
        code = asyncio.run(
            run_demo(settings, out, auto_approve=auto_approve, by=by or by_default())
        )
    except VigilError as exc:
        fail(str(exc), exc.exit_code)
    except DemoFailed as exc:
        fail(str(exc))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("codec-server")(codec_server)
    app.command()(doctor)
    app.command()(worker)
    app.command()(demo)
