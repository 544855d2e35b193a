"""Artifacts in the object store: `vigil artifact get | list` (and `sweep`, in data.py)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from vigil.workers.cli.common import JsonOpt, StateOpt, emit, out, plain, run_client

if TYPE_CHECKING:
    from vigil.workers.client import VigilClient

artifact_app = typer.Typer(help="Artifacts in the object store.", no_args_is_help=True)


@artifact_app.command("get")
def artifact_get(
    session_id: str,
    name: str,
    output: Annotated[str | None, typer.Option("--output", "-o")] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an artifact of a session (checksum verified)."""
    from pathlib import Path

    dest = Path(output or Path(name).name or "artifact")

    async def go(client: VigilClient) -> None:
        ref = await client.artifact_download(session_id, name, dest)
        emit(
            {"name": name, "sha256": ref.sha256, "size": ref.size, "path": str(dest)},
            as_json,
            lambda: out.print(f"wrote {dest} ({ref.size} bytes, sha256 {ref.sha256})"),
        )

    run_client(go, state_dir)


@artifact_app.command("list")
def artifact_list(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List a session's artifacts."""

    async def go(client: VigilClient) -> None:
        refs = await client.artifacts(session_id)

        def human() -> None:
            table = Table("name", "size", "sha256", "mime")
            for r in refs:
                table.add_row(*plain(r.name, r.size, r.sha256[:16], r.mime_type))
            out.print(table)

        emit([asdict(r) for r in refs], as_json, human)

    run_client(go, state_dir)
