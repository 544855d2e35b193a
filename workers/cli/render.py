"""How sessions are shown: transcript lines, approval notices, the end line, and `follow`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from vigil.workers.cli.common import EXIT_FAILED, err, out, when

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
        "type": "message",
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
    """Messages as they land and, in their place, the approvals they asked for: an
    approval is printed once the message with its tool call has been (never before)."""
    await client.require_session_soon(session_id)
    announced: set[str] = set()
    shown_step = -1  # the newest step whose assistant message was printed
    # Set when the feed says an approval was requested (and at first: the session may
    # be waiting for one already); the live state is asked only then.
    asked = asyncio.Event()
    asked.set()

    async def approval_requested() -> None:
        asked.set()

    stream = aiter(client.follow(session_id, on_approval=approval_requested))
    nxt: asyncio.Future[Any] = asyncio.ensure_future(anext(stream))
    try:
        while True:
            done, _ = await asyncio.wait({nxt}, timeout=1.0)
            if nxt in done:
                try:
                    msg = nxt.result()
                except StopAsyncIteration:
                    break
                print_message(msg, as_json)
                if msg.role == "assistant" and msg.step is not None:
                    shown_step = max(shown_step, msg.step)
                nxt = asyncio.ensure_future(anext(stream))
            if asked.is_set():
                asked.clear()
                if await _announce_approvals(client, session_id, announced, shown_step, as_json):
                    asked.set()  # one waits for its message to be printed first
    finally:
        nxt.cancel()
        with contextlib.suppress(BaseException):
            await nxt
    await print_end(client, session_id, as_json)


async def _announce_approvals(
    client: VigilClient, session_id: str, seen: set[str], shown_step: int, as_json: bool
) -> bool:
    """Print pending approvals not printed yet; True when one waits for its message."""
    from vigil.workers.client import VigilError

    deferred = False
    with contextlib.suppress(VigilError, TimeoutError):
        st = await asyncio.wait_for(client.state(session_id), 5.0)
        for a in st.pending_approvals:
            if a.approval_id in seen:
                continue
            if a.step > shown_step:
                deferred = True
                continue
            seen.add(a.approval_id)
            approve = f"vigil approve {session_id} {a.approval_id}"
            reject = f"vigil reject {session_id} {a.approval_id} --reason ..."
            if as_json:
                line = {
                    "type": "approval",
                    "approval_id": a.approval_id,
                    "tool": a.tool,
                    "arguments": a.arguments_preview,
                    "step": a.step,
                    "requested_at": a.requested_at.isoformat(),
                    "expires_at": a.expires_at.isoformat(),
                    "approve": approve,
                    "reject": reject,
                }
                out.print_json(json.dumps(line), indent=None)
                continue
            out.print(
                f"[bold yellow]approval needed[/] {escape(a.approval_id)}: "
                f"{escape(a.tool)}({escape(a.arguments_preview)}) "
                f"[dim]expires {when(a.expires_at)}[/]"
            )
            out.print(f"    {approve}   |   {reject}", markup=False)
    return deferred


async def wait_end(client: VigilClient, session_id: str, as_json: bool) -> None:
    await client.require_session_soon(session_id)  # says at once when no worker polls
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
