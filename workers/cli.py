"""The `vigil` command line (typer + rich).

Readable output by default, ``--json`` for scripts, and one clear line (never a
traceback) for the errors a user can fix. Exit codes: 0 ok, 1 a check or run failed,
2 bad input or configuration, 3 a server could not be reached, 4 not found.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from workers.settings import Settings
from workers.stack import Stack, StackError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4

app = typer.Typer(
    name="vigil",
    help="Durable autonomous AI agents on Temporal, PostgreSQL/pgvector and an object store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local stack without Docker.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StateOpt = Annotated[
    str | None, typer.Option("--state-dir", help="Stack state folder (VIGIL_STATE_DIR).")
]
S3Opt = Annotated[
    bool, typer.Option("--with-minio", help="Also start MinIO (always with VIGIL_ARTIFACT_BACKEND=s3).")
]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load_settings(state_dir: str | None = None, with_minio: bool = False) -> Settings:
    overrides: dict[str, object] = {}
    if state_dir:
        overrides["state_dir"] = state_dir
    if with_minio:
        overrides["with_minio"] = True
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except Exception as exc:
        fail(f"bad configuration: {exc}".splitlines()[0], EXIT_USAGE)


def _say(message: str) -> None:
    err.print(f"[dim]·[/] {message}")


@stack_app.command("up")
def stack_up(state_dir: StateOpt = None, with_minio: S3Opt = False, as_json: JsonOpt = False) -> None:
    """Start Temporal, PostgreSQL (+pgvector) and, when asked, MinIO; migrate; wait until ready."""
    settings = load_settings(state_dir, with_minio)
    stack = Stack(settings, say=_say)
    try:
        stack.up()
    except StackError as exc:
        fail(str(exc), EXIT_FAILED)
    _print_status(stack, as_json)


@stack_app.command("down")
def stack_down(state_dir: StateOpt = None) -> None:
    """Stop every part of the embedded stack; data stays in the state folder."""
    settings = load_settings(state_dir)
    Stack(settings, say=_say).down()
    err.print("stack stopped")


@stack_app.command("status")
def stack_status(state_dir: StateOpt = None, with_minio: S3Opt = False, as_json: JsonOpt = False) -> None:
    """Show each part and whether it answers."""
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
            table.add_row(part.name, part.mode, state, part.detail)
        out.print(table)
        ui = stack.settings.endpoints().temporal_ui
        if ui:
            out.print(f"Temporal UI: {ui}")
    return all(p.running for p in parts)


@app.command()
def doctor(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Check every part for real: reachable, versions, pgvector, migrations, bucket, attributes."""
    from workers.doctor import run_checks

    settings = load_settings(state_dir)
    checks = asyncio.run(run_checks(settings))
    if as_json:
        out.print_json(json.dumps([asdict(c) for c in checks]))
    else:
        table = Table("part", "check", "result", "detail")
        for c in checks:
            table.add_row(c.part, c.check, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail)
        out.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
