"""How sessions are shown: transcript lines, approval notices, the end line, and `follow`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from vigil.workers.cli.common import EXIT_FAILED, command_prefix, err, escape, one_line, out, when

if TYPE_CHECKING:
    from vigil.activities.record.feed import FeedItem
    from vigil.workers.client import VigilClient
    from vigil.workers.client_views import RetriedCall


def print_message(msg: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(message_dict(msg)), indent=None)
        return
    who = msg.role if not msg.name else f"{msg.role}:{msg.name}"
    colour = {"user": "cyan", "assistant": "green", "tool": "yellow", "system": "magenta"}.get(
        msg.role, "white"
    )
    out.print(f"[bold {colour}]#{msg.seq} {escape(one_line(who))}[/] ", end="")
    # A turn of tool calls only says so (its header line was empty).
    said = msg.content or ("[dim](calls tools)[/]" if msg.tool_calls else "")
    out.print(said, markup=not msg.content, highlight=False)
    for call in msg.tool_calls or []:
        name, arguments = one_line(str(call["name"])), one_line(str(call["arguments"]))
        out.print(f"    [dim]→ {escape(name)}({escape(arguments)})[/]")


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


RETRY_LOOK_SECONDS = 5.0
"""How often a command that waits on a session asks Temporal for calls being retried."""


@contextlib.asynccontextmanager
async def retries_told(
    client: VigilClient, session_id: str, as_json: bool, *, lines: bool
) -> AsyncIterator[None]:
    """While the block runs, a line on stderr for each call of the session that fails and
    waits for another attempt (a credential not set, a connection no worker has, a
    provider down), once for each thing it meets: what `vigil show` says, where a person
    following the session saw nothing happen. With ``as_json``: a ``{"type": "retrying"}``
    object among the JSON ``lines`` the command writes, or nothing where it writes one
    document."""

    def tell(call: RetriedCall) -> None:
        if not as_json:
            err.print(
                f"[yellow]retrying[/] {escape(one_line(str(call)))} "
                f"(`{command_prefix()} show {escape(session_id)}`)"
            )
        elif lines:
            said = {"type": "retrying", "id": session_id, **asdict(call)}
            out.print_json(json.dumps(said), indent=None)

    async def watch() -> None:
        told: set[tuple[str, str]] = set()
        while True:
            await asyncio.sleep(RETRY_LOOK_SECONDS)
            try:
                calls = await client.retrying(session_id)
            except Exception:  # a note only: the command's own outcome stands
                continue
            for call in calls:
                if (call.activity, call.failure) not in told:
                    told.add((call.activity, call.failure))
                    tell(call)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def follow_session(client: VigilClient, session_id: str, as_json: bool) -> None:
    """Messages and the events a person cares about, in the order they happened (see
    workers/cli/follow.py), until the session ends."""
    await client.require_session_soon(session_id)
    async with retries_told(client, session_id, as_json, lines=True):
        await _follow(client, session_id, as_json)
    await print_end(client, session_id, as_json)


async def _follow(client: VigilClient, session_id: str, as_json: bool) -> None:
    from vigil.activities.record.order import InOrder
    from vigil.schema import event_kinds
    from vigil.workers.cli import follow

    approvals = follow.Approvals(client, session_id)
    in_order = InOrder()  # a decision before the tool result it approved

    async def show(item: FeedItem) -> None:
        if not follow.shown(item):
            return
        if item.message is not None:
            print_message(item.message, as_json)
            asks = any(c.get("name") == "ask_human" for c in item.message.tool_calls or [])
            if asks and item.message.role == "assistant" and not as_json:
                # How to answer, as for an approval (`show` says it too).
                prefix = command_prefix()
                out.print(f"    answer with: {prefix} say {session_id} 'YOUR ANSWER'", markup=False)
        elif event_kinds.canonical(item.event_kind or "") == event_kinds.APPROVAL_REQUESTED:
            approval_id = str((item.data.get("payload") or {}).get("approval_id", ""))
            pending = await approvals.pending(approval_id)
            follow.print_approval(session_id, item.data, pending, as_json)
        else:
            follow.print_event(item.data, as_json)

    async for read in client.follow_items(session_id):
        for item in in_order.take(read):
            await show(item)
    for item in in_order.rest():
        await show(item)


async def wait_end(client: VigilClient, session_id: str, as_json: bool) -> None:
    await client.require_session_soon(session_id)  # says at once when no worker polls
    with err.status(f"waiting for {session_id} to end ..."):
        async with retries_told(client, session_id, as_json, lines=False):
            await client.result(session_id)
    await print_end(client, session_id, as_json)


async def end_of(client: VigilClient, session_id: str) -> dict[str, Any]:
    """How the session ended, as the record says once it is closed: id, status, summary,
    steps."""
    from vigil.schema.payloads import FINAL_STATUSES

    row = await client.require_session(session_id)
    if row.status not in {s.value for s in FINAL_STATUSES}:
        # Ended without writing its end (terminated from Temporal UI or another shell, a
        # run that failed): its record is closed as Temporal says, then read again.
        await client.reconcile([session_id])
        row = await client.require_session(session_id)
    return {"id": session_id, "status": row.status, "summary": row.summary, "steps": row.step}


def exit_for(end: dict[str, Any]) -> None:
    """Exit 1 for an end that is a failure."""
    if end["status"] in ("failed", "timed_out", "terminated"):
        raise typer.Exit(EXIT_FAILED)


async def print_end(client: VigilClient, session_id: str, as_json: bool) -> None:
    end = await end_of(client, session_id)
    if as_json:  # one line, so `follow --json` prints JSON Lines throughout
        out.print_json(json.dumps({"type": "end", **end}), indent=None)
    else:
        steps = f"{end['steps']} step{'' if end['steps'] == 1 else 's'}"
        out.print(f"session {session_id} ended: [bold]{end['status']}[/] after {steps}")
        if end["summary"] and end["status"] != "completed":
            out.print(f"  {escape(one_line(end['summary']))}")  # why: a failure's, a cancel's
    exit_for(end)


async def print_waiting_approvals(client: VigilClient, session_id: str) -> None:
    """On stderr: the approvals the session waits for, each with the commands that answer
    it (or, when its state cannot be read now, the command that shows them)."""
    from vigil.workers.client import VigilError

    vigil = command_prefix()
    try:
        pending = (await client.state(session_id)).pending_approvals
    except VigilError:
        pending = []
    if not pending:
        err.print(f"{escape(session_id)} waits for an approval: {vigil} show {escape(session_id)}")
        return
    for approval in pending:
        sid, aid = escape(session_id), escape(one_line(approval.approval_id))
        tool, arguments = one_line(approval.tool), one_line(approval.arguments_preview)
        err.print(
            f"{sid} waits for approval {aid} ({escape(tool)} "
            f"{escape(arguments)}): {vigil} approve {sid} {aid}, "
            f"or {vigil} reject {sid} {aid} --reason ..."
        )


TIMER_UNTIL = "timer until "


def waiting_for(said: str) -> str:
    """What a session waits for, as a person reads it: a sleep's time as every time is
    shown (the session says it in ISO 8601, as its state's JSON keeps it)."""
    if said.startswith(TIMER_UNTIL):
        with contextlib.suppress(ValueError):
            return TIMER_UNTIL + when(datetime.fromisoformat(said.removeprefix(TIMER_UNTIL)))
    return said
