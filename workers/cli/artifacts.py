"""Artifacts in the object store: `vigil artifact get | list` (and `sweep`, in data.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_USAGE,
    JsonOpt,
    StateOpt,
    emit,
    err,
    fail,
    nothing,
    out,
    run_client,
    table,
    when,
)

if TYPE_CHECKING:
    from vigil.workers.client import VigilClient

artifact_app = typer.Typer(help="Artifacts in the object store.", no_args_is_help=True)


@artifact_app.command("get")
def artifact_get(
    session_id: str,
    name: str,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="File to write (`-`: standard output)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=1,
            max=2**31 - 1,
            help="This version of the name (1: its first bytes; the newest otherwise).",
        ),
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an artifact of a session, its checksum verified.

    Written to a file named after it, or to -o FILE, or with -o - to standard output."""
    import sys
    from pathlib import Path

    to_stdout = output == "-"
    if to_stdout and as_json:
        fail("-o - writes the bytes to standard output; --json cannot go there too", EXIT_USAGE)
    dest = Path(output or Path(name).name or "artifact")
    # A link is never written through unasked, even one whose target is gone.
    if not to_stdout and (dest.is_file() or dest.is_symlink()) and not force:
        fail(f"{dest} exists; --force overwrites it (or -o another path)", EXIT_USAGE)
    if not to_stdout and not dest.parent.is_dir():
        fail(f"{dest.parent} is not a folder", EXIT_USAGE)

    async def go(client: VigilClient) -> None:
        if to_stdout:
            ref = await client.artifact_download(session_id, name, sys.stdout.buffer, version)
            err.print(f"wrote {ref.size} bytes to standard output (sha256 {ref.sha256})")
            return
        ref = await client.artifact_download(session_id, name, dest, version)
        emit(
            {
                "name": name,
                "version": version,
                "sha256": ref.sha256,
                "size": ref.size,
                "path": str(dest),
            },
            as_json,
            lambda: out.print(Text(f"wrote {dest} ({ref.size} bytes, sha256 {ref.sha256})")),
        )

    run_client(go, state_dir)


@artifact_app.command("list")
def artifact_list(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List a session's artifacts."""

    async def go(client: VigilClient) -> None:
        refs = await client.artifacts(session_id)

        def human() -> None:
            if not refs:
                nothing(f"session {session_id} has no artifacts")
                return
            rows = [(r.name, r.size, r.sha256, r.mime_type, when(r.created_at)) for r in refs]
            out.print(table(("name", "size", "sha256", "mime", "stored"), rows, whole=3))

        # A listing's references carry no version (only an upload's is counted).
        emit([{k: v for k, v in asdict(r).items() if k != "version"} for r in refs], as_json, human)

    run_client(go, state_dir)
