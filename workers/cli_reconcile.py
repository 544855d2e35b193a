"""`vigil reconcile`: close sessions whose workflow ended outside vigil's control."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from vigil.workers.client import VigilClient


def reconcile_command(
    session_ids: Annotated[
        list[str] | None, typer.Argument(help="Only these sessions (default: every open one).")
    ] = None,
    state_dir: Annotated[
        str | None, typer.Option("--state-dir", help="Stack state folder (VIGIL_STATE_DIR).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Mark sessions whose workflow was terminated, timed out or deleted in Temporal as
    ended, and record why (workers run this every VIGIL_RECONCILE_SECONDS too)."""
    # The CLI's shared helpers; imported here because cli.py registers this command.
    from vigil.workers.cli import _emit, _plain, out, run_client

    async def go(client: VigilClient) -> None:
        done = await client.reconcile(session_ids or None)

        def human() -> None:
            if not done:
                out.print("nothing to reconcile: every open session's workflow is running")
                return
            table = Table("session", "was", "now", "temporal", "why")
            for r in done:
                table.add_row(
                    *_plain(r.session_id, r.previous_status, r.status, r.temporal_status, r.reason)
                )
            out.print(table)

        _emit([asdict(r) for r in done], as_json, human)

    run_client(go, state_dir)
