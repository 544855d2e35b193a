"""`vigil demo`: a real session on the scripted model that stops for one approval."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from urllib.parse import urlsplit

from rich.console import Console

from vigil.activities.models.scripted import ScriptedProvider
from vigil.schema.payloads import Budget, SessionState, SessionStatus, ToolPolicy
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.worker import build_worker, runtime


def demo_page(ui_url: str | None) -> str:
    return (ui_url or "http://127.0.0.1:8233") + "/"


def demo_script(ui_url: str | None) -> list[dict[str, object]]:
    """Notes, one approved fetch of a page on this machine (Temporal UI), a summary."""
    target = demo_page(ui_url)
    return [
        {
            "tool": "write_artifact",
            "args": {
                "name": "plan.md",
                "content": "# Plan\n1. Check the Temporal UI answers.\n"
                "2. Write down what was found.\n",
            },
        },
        {"tool": "http_fetch", "args": {"url": target}},
        {
            "tool": "remember",
            "args": {
                "content": "The local Temporal UI answered the demo's health check.",
                "kind": "fact",
                "subject": "temporal ui health",
                "importance": 0.6,
            },
        },
        {
            "tool": "finish",
            "args": {
                "summary": "Checked the local Temporal UI (fetch approved by a human), "
                "wrote plan.md and remembered the result."
            },
        },
    ]


async def run_demo(settings: Settings, console: Console, *, auto_approve: bool, by: str) -> int:
    endpoints = settings.endpoints()
    ui = endpoints.temporal_ui
    # The page the demo fetches: the UI's own host and port (loopback is named exactly).
    page = urlsplit(demo_page(ui)).netloc
    allow = ",".join(x for x in [settings.http_allow, page] if x)
    settings = settings.model_copy(update={"http_allow": allow})
    provider = ScriptedProvider(demo_script(ui))
    task_queue = f"{settings.task_queue}-demo-{uuid.uuid4().hex[:6]}"
    temporal = await connect(settings)
    async with runtime(settings, provider) as rt, build_worker(temporal, rt, task_queue):
        client = await VigilClient.connect(settings)
        try:
            started = await client.start_session(
                "demo-agent",
                "Check that the local Temporal UI answers, note the result, and remember it.",
                budget=Budget(max_steps=10, max_seconds=600),
                policy=ToolPolicy(require_approval=["http_fetch"]),
                task_queue=task_queue,
                allow_undefined=True,  # the demo's agent is built in, not defined in a file
            )
            sid = started.id
            console.print(f"[bold]session[/] {sid}")
            if started.ui_url:
                console.print(f"[bold]Temporal UI[/] {started.ui_url}")
            state = await _wait_for_approval(client, sid, console)
            approval = state.pending_approvals[0]
            console.print(
                "\n[bold yellow]The agent wants to run[/] "
                f"{approval.tool}({approval.arguments_preview})"
                f"\n[bold]approval id[/] {approval.approval_id}\n"
                "Approve it with vigil's CLI:\n"
                f"  uv run vigil approve {sid} {approval.approval_id} --note 'looks fine'\n"
                "or with the plain Temporal CLI:\n"
                f"  temporal workflow signal --workflow-id {sid} --name approve "
                f"--input '{json.dumps({'approval_id': approval.approval_id, 'by': 'you'})}'\n"
            )
            if not auto_approve and sys.stdin.isatty():
                console.print(
                    "Press Enter to approve it from here (or approve from another shell) ..."
                )
                await _enter_or_decided(client, sid)
            st = await client.state(sid)
            if st.pending_approvals:
                ack = await client.approve(
                    sid, approval.approval_id, by=by, note="approved in the demo"
                )
                console.print(f"[green]approved[/] by {by}: {ack.message if ack else ''}")
            result = await client.result(sid, timeout=300)
            console.print("\n[bold]Transcript[/] (from PostgreSQL)")
            async for msg in client.follow(sid):
                who = msg.role if not msg.name else f"{msg.role}:{msg.name}"
                console.print(f"[bold]#{msg.seq} {who}[/] ", end="")
                console.print(msg.content[:400], markup=False, highlight=False)
                for call in msg.tool_calls or []:
                    console.print(f"    [dim]→ {call['name']}({call['arguments'][:200]})[/]")
            status = result.status if result else SessionStatus(await client.status(sid))
            console.print(f"\n[bold]status[/] {status.value}")
            if started.ui_url:
                console.print(f"[bold]Temporal UI[/] {started.ui_url}")
            return 0 if status == SessionStatus.COMPLETED else 1
        finally:
            await client.close()


async def _wait_for_approval(client: VigilClient, sid: str, console: Console) -> SessionState:
    with console.status("running until the agent asks for approval ..."):
        for _ in range(600):
            with contextlib.suppress(Exception):
                st = await client.state(sid)
                if st.pending_approvals:
                    return st
            await asyncio.sleep(0.1)
    raise RuntimeError("the demo session never asked for approval")


async def _enter_or_decided(client: VigilClient, sid: str) -> None:
    loop = asyncio.get_running_loop()
    enter = loop.run_in_executor(None, sys.stdin.readline)
    while not enter.done():
        st = await client.state(sid)
        if not st.pending_approvals:
            return
        await asyncio.sleep(0.3)
