"""`vigil memory forget`: take one memory out of an agent's recall, keeping it for history.

Registered on ``vigil memory`` by ``workers/cli.py``; the work is the client's
``memory_forget`` (the same service the HTTP API's ``DELETE /agents/{a}/memory/{id}`` uses).
"""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.workers.cli import (
    AgentOpt,
    ByOpt,
    JsonOpt,
    StateOpt,
    _by_default,
    _emit,
    memory_app,
    out,
    run_client,
)
from vigil.workers.client import VigilClient


@memory_app.command("forget")
def memory_forget(
    memory_id: Annotated[int, typer.Argument(min=1, help="The memory's id (memory search).")],
    agent: AgentOpt = "default",
    reason: Annotated[str | None, typer.Option(help="Why (recorded with it).")] = None,
    by: ByOpt = "",
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget a memory: never recalled again, kept with who forgot it, when and why."""
    who = by or _by_default()

    async def go(client: VigilClient) -> None:
        record = await client.memory_forget(agent, memory_id, by=who, reason=reason)
        _emit(
            {
                "id": record.id,
                "agent_id": record.agent_id,
                "forgotten_at": record.forgotten_at.isoformat(),
                "forgotten_by": record.forgotten_by,
                "forget_reason": record.forget_reason,
            },
            as_json,
            lambda: out.print(
                f"memory {record.id} of {agent} forgotten by {record.forgotten_by} "
                f"at {record.forgotten_at:%Y-%m-%d %H:%M:%S}"
            ),
        )

    run_client(go, state_dir)
