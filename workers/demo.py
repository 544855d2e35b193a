"""`vigil demo`: a real session of the agent in ``examples/agents/ops.toml``.

The file is applied as `vigil agent apply` applies it (its Python tool loaded from
``examples/ops_tools``, its MCP server started once to list its tools); the session runs
on the scripted model (a model connection of kind ``scripted`` playing ``demo_script``),
uses the Python tool and the MCP server, and stops for one approval before it writes a
report. What the demo tells at the end is read back from the record: the tools' own
results, not the script's words.

The demo never replaces a definition of yours: it applies the file as agent ``ops`` only
when ``ops`` has none or its newest version came from that same file (an earlier demo,
or `vigil agent apply examples/agents`); otherwise it runs the same file as agent
``ops-demo`` and leaves ``ops`` as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.store import StoredEvent
from vigil.schema import event_kinds
from vigil.schema.agents import content_hash
from vigil.schema.payloads import Budget, SessionState, SessionStatus
from vigil.workers.agents import AppliedAgent, applying_service, load_all
from vigil.workers.client import NotFound, Refused, StartedSession, VigilClient
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.tool_wiring import with_worker_flags
from vigil.workers.worker import build_worker, runtime

AGENT_FILE = Path("examples/agents/ops.toml")
DEMO_AGENT = "ops-demo"
"""The name the demo runs its agent under when ``ops`` holds someone's own definition."""
TOOL_MODULE = "examples.ops_tools.tools"
CONNECTION = "scripted"
"""The model connection the agent file names; the demo defines it."""
REPORT = "ops-report.md"
SAMPLE_LOG = (
    "2026-11-30 09:00:01 INFO  backup started\n"
    "2026-11-30 09:04:17 WARN  backup slow: 80 MB/s\n"
    "2026-11-30 09:12:44 ERROR disk /var nearly full (97%)\n"
    "2026-11-30 09:12:45 INFO  rotating logs\n"
    "2026-11-30 09:13:02 ERROR rotation failed: permission denied\n"
    "2026-11-30 09:20:00 INFO  backup finished\n"
)
GOAL = (
    "Check how much space examples/ takes and which levels the morning log shows, "
    "then write a short report."
)


class DemoFailed(RuntimeError):
    """The demo could not run its session to the approval (a one-line reason)."""


def demo_script() -> list[dict[str, Any]]:
    """What the scripted model says: measure, count, ask to write a report, finish. It
    quotes what the tools returned (``{last_result}``) and the goal (``{goal}``), and when
    a call fails (a refused approval too) it says so and stops instead
    (activities/models/scripted.py)."""
    report = (
        "# Ops check\n\n"
        "Goal: {goal}\n\n"
        "- disk_usage measured the files under examples/ (its numbers are in the record).\n"
        "- ops.log_levels counted the levels of the morning log: {last_result}\n"
    )
    return [
        {
            "tools": [
                {"tool": "disk_usage", "args": {"path": "examples", "top": 3}},
                {"tool": "ops.log_levels", "args": {"log": SAMPLE_LOG}},
            ]
        },
        {"tool": "write_artifact", "args": {"name": REPORT, "content": report}},
        {
            "tool": "finish",
            "args": {
                "summary": "Measured examples/ (disk_usage), counted the morning log's levels "
                f"(ops.log_levels) and wrote {REPORT} once a human approved it: {{last_result}}"
            },
        },
    ]


def _checkout() -> Path:
    """The folder holding examples/: the current one, or the checkout vigil runs from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / AGENT_FILE).is_file():
            return root
    raise DemoFailed(f"the demo needs {AGENT_FILE} from vigil's repository: run it from a checkout")


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with the demo's scripted connection (its script in the state folder)
    and the example tool module loaded like `vigil worker --tools`."""
    script = settings.resolved_state_dir / "demo-script.json"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(json.dumps(demo_script(), indent=2) + "\n", encoding="utf-8")
    connections = json.loads(settings.model_connections or "{}")
    connections[CONNECTION] = {
        "kind": "scripted",
        "base_url": script.as_uri(),
        "model": "scripted-1",
    }
    settings = settings.model_copy(update={"model_connections": json.dumps(connections)})
    return with_worker_flags(settings, [TOOL_MODULE], None, False)


CANCEL_WAIT_SECONDS = 10.0
"""How long an interrupted demo waits for its session's cancel, then for its end."""


async def run_demo(settings: Settings, console: Console, *, auto_approve: bool, by: str) -> int:
    # The agent file names its MCP server by a path in the checkout (as users write them).
    os.chdir(_checkout())
    settings = demo_settings(settings)
    task_queue = f"{settings.task_queue}-demo-{uuid.uuid4().hex[:6]}"
    temporal = await connect(settings)
    async with runtime(settings) as rt, build_worker(temporal, rt, task_queue):
        applied = await apply_demo_agent(settings, rt.activities.sessionmaker, by, console)
        what = "applied as version" if applied.created else "unchanged, version"
        console.print(f"[bold]agent[/] {applied.name} ({AGENT_FILE}): {what} {applied.version}")
        client = await VigilClient.connect(settings)
        # Chosen here, so that an interrupt while the start call is in flight (Temporal may
        # have taken it) still knows which session to cancel.
        sid = client.new_session_id(applied.name)
        try:
            started = await client.start_session(
                applied.name,
                GOAL,
                session_id=sid,
                budget=Budget(max_steps=10, max_seconds=600),
                task_queue=task_queue,
            )
            return await _show_session(settings, client, started, console, auto_approve, by)
        except BaseException:
            # Interrupted (Ctrl-C, a closed pipe) or failed while the session runs: its
            # queue is this process's own, which no other worker polls, so it is cancelled
            # while this worker can still end it rather than left running for ever.
            await _cancel_left(client, sid, by)
            raise
        finally:
            await client.close()


async def _cancel_left(client: VigilClient, sid: str, by: str) -> None:
    reason = "the demo was interrupted before its session ended"
    said = f"vigil demo: could not cancel session {sid}; `uv run vigil cancel {sid}` does"
    try:
        await asyncio.wait_for(client.cancel(sid, by=by, reason=reason), CANCEL_WAIT_SECONDS)
    except (Refused, NotFound):
        return  # it had ended, or it was never started
    except (Exception, asyncio.CancelledError):
        pass  # Temporal is not answering: said below
    else:
        said = f"vigil demo: asked to cancel session {sid} ({reason}); no end recorded yet"
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await client.result(sid, timeout=CANCEL_WAIT_SECONDS)  # the worker records it
            said = f"vigil demo: cancelled session {sid} ({reason})"
    with contextlib.suppress(Exception):
        print(said, file=sys.stderr)


async def _show_session(
    settings: Settings,
    client: VigilClient,
    started: StartedSession,
    console: Console,
    auto_approve: bool,
    by: str,
) -> int:
    """Walk the demo's session through its approval to its end, and print what it did."""
    sid = started.id
    console.print(f"[bold]session[/] {sid}")
    if started.ui_url:
        console.print(f"[bold]Temporal UI[/] {started.ui_url}")
    state = await _wait_for_approval(client, sid, console)
    approval = state.pending_approvals[0]
    signal = json.dumps({"approval_id": approval.approval_id, "by": "you"})
    address = settings.endpoints().temporal_address
    namespace = settings.temporal_namespace
    console.print(
        "\n[bold yellow]The agent wants to run[/] "
        f"{escape(approval.tool)}({escape(approval.arguments_preview[:120])}...)"
        f"\n[bold]approval id[/] {approval.approval_id}\n"
        "Approve it with vigil's CLI:\n"
        f"  uv run vigil approve {sid} {approval.approval_id} --note 'looks fine'\n"
        'or with the plain Temporal CLI (`eval "$(uv run vigil stack env)"` puts it\n'
        "on PATH and aims it at this stack):\n"
        f"  temporal workflow signal --workflow-id {sid} --name approve "
        f"--input '{signal}' --address {address} --namespace {namespace}\n",
        soft_wrap=True,  # a command wrapped at the terminal's width breaks when pasted
    )
    if not auto_approve and sys.stdin.isatty():
        console.print("Press Enter to approve it from here (or approve from another shell) ...")
        await _enter_or_decided(client, sid)
    st = await client.state(sid)
    if st.pending_approvals:
        ack = await client.approve(sid, approval.approval_id, by=by, note="approved in the demo")
        console.print(f"[green]approved[/] by {by}: {ack.message if ack else ''}")
    result = await client.result(sid, timeout=300)
    console.print("\n[bold]Transcript[/] (from PostgreSQL)")
    async for msg in client.follow(sid):
        who = msg.role if not msg.name else f"{msg.role}:{msg.name}"
        console.print(f"[bold]#{msg.seq} {escape(who)}[/] ", end="")
        console.print(msg.content[:400], markup=False, highlight=False, soft_wrap=True)
        for call in msg.tool_calls or []:
            console.print(
                f"    → {call['name']}({call['arguments'][:200]})",
                markup=False,
                highlight=False,
                soft_wrap=True,
                style="dim",
            )
    console.print("\n[bold]What the tools returned[/] (from the record)")
    for line in story(await client.events(sid)):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    status = result.status if result else SessionStatus(await client.status(sid))
    console.print(f"\n[bold]status[/] {status.value}")
    if result is not None:
        # The model's own last words: true to the tools, failures included.
        console.print(f"[bold]summary[/] {escape(result.summary)}", highlight=False, soft_wrap=True)
    if started.ui_url:
        console.print(f"[bold]Temporal UI[/] {started.ui_url}")
    _print_api(settings, sid, console)
    console.print(
        "\nThe stack keeps running so you can look around (`uv run vigil list`, "
        f"`uv run vigil show {sid}`); `uv run vigil stack down` stops it.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0 if status == SessionStatus.COMPLETED else 1


async def apply_demo_agent(
    settings: Settings, db: async_sessionmaker[DbSession], by: str, console: Console
) -> AppliedAgent:
    """Apply the demo's agent file as `vigil agent apply` does, under its own name unless
    that agent's newest definition came from elsewhere (then as ``DEMO_AGENT``)."""
    from vigil.activities.agents.files import LoadedAgent

    service = applying_service(settings, db)
    (agent,) = load_all([AGENT_FILE])
    newest = await service.find(agent.spec.name)
    if newest is not None and newest.source != str(AGENT_FILE):
        console.print(
            f"[bold]agent[/] {agent.spec.name} has a definition of its own (version "
            f"{newest.version}, from {newest.source or 'code'}): the demo leaves it as it is "
            f"and runs {AGENT_FILE} as agent {DEMO_AGENT}",
            highlight=False,
            soft_wrap=True,
        )
        spec = agent.spec.model_copy(update={"name": DEMO_AGENT})
        agent = LoadedAgent(agent.path, spec, content_hash(spec), locate=agent.locate)
    (applied,) = await service.apply_loaded([agent], by=by)
    return applied


def _print_api(settings: Settings, sid: str, console: Console) -> None:
    """Where the HTTP API is (`vigil stack up` runs it) and a first request to try."""
    from vigil.workers.stack.procs import port_answers

    base = f"http://{settings.api_host}:{settings.api_port}/v1"
    if not port_answers(settings.api_port, settings.api_host):
        console.print(f"[bold]HTTP API[/] not running: start it with `uv run vigil api` ({base})")
        return
    console.print(f"[bold]HTTP API[/] {base} (docs {base}/docs)")
    console.print(
        "  export VIGIL_TOKEN=$(uv run vigil token create --owner you --scope read)\n"
        f'  curl -s -H "Authorization: Bearer $VIGIL_TOKEN" {base}/sessions/{sid}/transcript\n'
        f'  curl -N -H "Authorization: Bearer $VIGIL_TOKEN" {base}/sessions/{sid}/stream',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def story(events: list[StoredEvent]) -> list[str]:
    """One line per tool call, told from its recorded result (and who approved it)."""
    approvals = {
        e.payload.get("tool"): e
        for e in events
        if e.kind == event_kinds.APPROVAL_DECIDED and e.payload
    }
    lines: list[str] = []
    for event in events:
        if event.kind != "tool_call" or event.payload.get("tool") == "finish":
            continue
        tool, data = str(event.payload.get("tool")), event.payload.get("data") or {}
        if not event.payload.get("ok"):
            told = f"failed: {str(event.payload.get('output_preview', ''))[:200]}"
        elif tool == "disk_usage":
            biggest = ", ".join(f"{b['path']} ({b['bytes']} B)" for b in data.get("biggest", []))
            told = f"{data.get('files')} files, {data.get('bytes')} bytes; biggest: {biggest}"
        elif tool == "ops.log_levels":
            told = ", ".join(f"{level} {count}" for level, count in sorted(data.items()))
        else:
            told = str(event.payload.get("output_preview", ""))[:200]
        decided = approvals.get(tool)
        if decided is not None:
            verb = "approved" if decided.payload.get("decision") == "approve" else "refused"
            told += f" ({verb} by {decided.actor})"
        lines.append(f"{tool}: {told}")
    return lines


async def _wait_for_approval(client: VigilClient, sid: str, console: Console) -> SessionState:
    with console.status("running until the agent asks for approval ..."):
        for _ in range(1200):
            st: SessionState | None = None
            with contextlib.suppress(Exception):  # not queryable yet
                st = await client.state(sid)
            if st is not None and st.pending_approvals:
                return st
            if st is not None and st.status not in (
                SessionStatus.RUNNING,
                SessionStatus.WAITING_APPROVAL,
            ):
                result = await client.result(sid, timeout=10)
                why = result.summary if result else st.last_message
                raise DemoFailed(f"the demo session ended {st.status.value}: {why}")
            await asyncio.sleep(0.1)
    raise DemoFailed(f"the demo session {sid} did not ask for approval within 2 minutes")


async def _enter_or_decided(client: VigilClient, sid: str) -> None:
    loop = asyncio.get_running_loop()
    enter = loop.run_in_executor(None, sys.stdin.readline)
    while not enter.done():
        st = await client.state(sid)
        if not st.pending_approvals:
            return
        await asyncio.sleep(0.3)
