"""How sessions are shown: transcript lines, approval notices, the end line, and `follow`."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from vigil.workers.cli.common import EXIT_FAILED, err, out

if TYPE_CHECKING:
    from vigil.workers.client import VigilClient


def print_message(msg: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(message_dict(msg)), indent=None)
        return
    who = msg.role if not msg.name else f"{msg.role}:{msg.name}"
    colour = {"user": "cyan", "assistant": "green", "tool": "yellow", "system": "magenta"}.get(
        msg.role, "white"
    )
    out.print(f"[bold {colour}]#{msg.seq} {escape(who)}[/] ", end="")
    out.print(msg.content or "", markup=False, highlight=False)
    for call in msg.tool_calls or []:
        out.print(f"    [dim]→ {escape(str(call['name']))}({escape(str(call['arguments']))})[/]")


def message_dict(msg: Any) -> dict[str, Any]:
    return {
        "seq": msg.seq,
        "role": msg.role,
        "name": msg.name,
        "content": msg.content,
        "tool_calls": msg.tool_calls,
        "tool_call_id": msg.tool_call_id,
        "step": msg.step,
        "created_at": msg.created_at.isoformat(),
    }


async def follow_session(client: VigilClient, session_id: str, as_json: bool) -> None:
    await client.require_session_soon(session_id)
    announced: set[str] = set()
    async for msg in client.follow(session_id):
        print_message(msg, as_json)
        if not as_json:
            await _announce_approvals(client, session_id, announced)
    await print_end(client, session_id, as_json)


async def _announce_approvals(client: VigilClient, session_id: str, seen: set[str]) -> None:
    from vigil.workers.client import VigilError

    with contextlib.suppress(VigilError):
        st = await client.state(session_id)
        for a in st.pending_approvals:
            if a.approval_id not in seen:
                seen.add(a.approval_id)
                out.print(
                    f"[bold yellow]approval needed[/] {a.approval_id}: "
                    f"{a.tool}({escape(a.arguments_preview)})\n"
                    f"    vigil approve {session_id} {a.approval_id}   |   "
                    f"vigil reject {session_id} {a.approval_id} --reason ..."
                )


async def wait_end(client: VigilClient, session_id: str, as_json: bool) -> None:
    with err.status(f"waiting for {session_id} to end ..."):
        await client.result(session_id)
    await print_end(client, session_id, as_json)


async def print_end(client: VigilClient, session_id: str, as_json: bool) -> None:
    row = await client.require_session(session_id)
    if as_json:  # one line, so `follow --json` prints JSON Lines throughout
        out.print_json(
            json.dumps(
                {"id": session_id, "status": row.status, "summary": row.summary, "steps": row.step}
            ),
            indent=None,
        )
    else:
        out.print(f"session {session_id} ended: [bold]{row.status}[/] after {row.step} steps")
    if row.status in ("failed", "timed_out", "terminated"):
        raise typer.Exit(EXIT_FAILED)
