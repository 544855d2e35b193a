"""Sessions: `vigil start | list | show | follow | export | search | history`."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_USAGE,
    AgentOpt,
    AgentVersionOpt,
    JsonOpt,
    StateOpt,
    UndefinedAgentOpt,
    _parse_since,
    as_invoked,
    checked_session_id,
    command_prefix,
    csv,
    emit,
    err,
    escape,
    fail,
    given_budget,
    highlighted,
    json_default,
    nothing,
    out,
    plain,
    run_client,
    short,
    table,
    when,
)
from vigil.workers.cli.render import (
    follow_session,
    message_dict,
    print_message,
    wait_end,
    waiting_for,
)

if TYPE_CHECKING:
    from vigil.activities.record.archived import ArchivedTranscript
    from vigil.schema.payloads import SessionState
    from vigil.workers.client import VigilClient


def start(
    goal: Annotated[str, typer.Argument(help="What the agent should achieve.")],
    agent: AgentOpt = "default",
    session_id: Annotated[
        str | None,
        typer.Option("--id", help="Session id: letters, digits, . _ : - (a new one by default)."),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Step budget (the definition's, or 50).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Token budget.")] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="Cost budget in USD (more than 0).")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="Wall-clock budget in seconds (more than 0).")
    ] = None,
    approve_tools: Annotated[
        str | None,
        typer.Option(help="Comma-separated tools that need approval (default policy otherwise)."),
    ] = None,
    allow_tools: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated allowed tools (each one the agent has); '' for none "
            "(finish is always offered)."
        ),
    ] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    follow_: Annotated[bool, typer.Option("--follow", help="Stream the transcript live.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the session to end.")] = False,
    agent_version: AgentVersionOpt = None,
    undefined_agent: UndefinedAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a session of an agent; prints its id and Temporal UI link.

    The agent's definition gives its settings; the options override them."""
    from vigil.schema.limits import start_error
    from vigil.schema.payloads import ToolPolicy

    too_big = start_error(goal, system_prompt)
    if too_big is not None:
        fail(f"refused before sending: {too_big}", EXIT_USAGE)
    checked_session_id(session_id)
    allowed = csv(allow_tools)
    if allowed == [] and allow_tools and allow_tools.strip():
        fail(
            f"--allow-tools names no tool ({allow_tools!r}): give the tools the session may "
            "use, '' for none (leave it out for all the agent's)",
            EXIT_USAGE,
        )
    policy = ToolPolicy(require_approval=csv(approve_tools), allowed=allowed)
    budget = given_budget(
        max_steps=max_steps, max_tokens=max_tokens, max_cost_usd=max_cost, max_seconds=max_seconds
    )

    async def go(client: VigilClient) -> None:
        from vigil.workers.client import UnknownAgent

        try:
            started = await client.start_session(
                agent,
                goal,
                session_id=session_id,
                budget=budget,
                policy=policy,
                system_prompt=system_prompt,
                agent_version=agent_version,
                allow_undefined=True if undefined_agent else None,
            )
        except UnknownAgent as exc:
            if "has no definition" not in str(exc):  # a version it lacks: said as it is
                raise
            raise UnknownAgent(f"{exc}{await _defined_agents(client, agent)}") from None
        if not (follow_ or wait):  # those say it as an error, at once
            await warn_when_no_worker(client)
        if as_json and not (follow_ or wait):
            out.print_json(json.dumps({"id": started.id, "ui": started.ui_url}))
            return
        if not as_json:
            out.print(f"started [bold]{escape(started.id)}[/]")
            if started.ui_url:
                out.print(f"Temporal UI: {started.ui_url}")
        if follow_:
            await follow_session(client, started.id, as_json)
        elif wait:
            await wait_end(client, started.id, as_json)

    run_client(go, state_dir)


async def _defined_agents(client: VigilClient, named: str) -> str:
    """``; agents with a definition: ...`` for an agent start refused, so a person who left
    out ``--agent`` (it is ``default`` then) or misspelt it sees what there is. The CLI
    reads every agent anyway; the API, whose tokens may be scoped, never lists them."""
    from vigil.workers.agents import AgentService

    names = [a.name for a in await AgentService(client.db).list_agents() if a.name != named]
    if not names:
        return ""
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return f"; agents with a definition: {shown} (name one with --agent)"


async def warn_when_no_worker(
    client: VigilClient,
    task_queue: str | None = None,
    what: str = "the session waits until one does",
) -> None:
    """A line on stderr when no worker polls the task queue (the configured one by
    default): the session just started (or cancelled) waits, and the person should know
    why and what to run."""
    from vigil.workers.client import NoWorker, VigilError

    try:
        await client.require_worker(task_queue or client.settings.task_queue, what=what)
    except NoWorker as exc:
        err.print(f"warning: {escape(as_invoked(str(exc)))}")
    except VigilError:
        return  # Temporal took the start; a failed look is no reason to fail the command


def list_(
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="Only sessions in this state (running, completed, failed, ...)."
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or e.g. 2h, 3d.")] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Only the runs of this schedule.")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="At most this many sessions (500 at most).")
    ] = 50,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sessions from the record, with Temporal's view of each."""
    from vigil.schema.payloads import SessionStatus
    from vigil.workers.client import UNRECORDED

    known = [s.value for s in SessionStatus] + [UNRECORDED]
    if status is not None and status not in known:
        fail(f"unknown status {status!r}; one of {', '.join(known)}", EXIT_USAGE)
    since_dt = _parse_since(since)

    async def go(client: VigilClient) -> None:
        rows = await client.list_sessions(
            agent=agent, status=status, since=since_dt, schedule_id=schedule, limit=limit
        )

        def human() -> None:
            if not rows:
                named = (("agent", agent), ("status", status), ("schedule", schedule))
                filters = [f"{k} {v}" for k, v in named if v]
                filters += [f"since {since}"] if since else []
                nothing("no sessions", "matching " + ", ".join(filters) if filters else None)
                return
            headers = ("id", "agent", "status", "step", "temporal", "created", "goal")
            cells = [
                (
                    r.id,
                    r.agent_id,
                    r.status,
                    r.step,
                    r.temporal_status or "-",
                    when(r.created_at),
                    short(r.goal, 60),
                )
                for r in rows
            ]
            out.print(table(headers, cells, whole=2))

        emit([asdict(r) for r in rows], as_json, human)

    run_client(go, state_dir)


def show(
    session_id: str,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
    last: Annotated[int, typer.Option(min=0, help="How many recent messages to show.")] = 20,
) -> None:
    """A session's record, live state and recent messages."""

    async def go(client: VigilClient) -> None:
        view = await client.session_view(session_id, last)
        row, live, recent = view.session, view.state, view.messages
        unavailable = view.state_unavailable
        no_live = f"unavailable: {as_invoked(unavailable)}" if unavailable else None
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "session": asdict(row),
                        "state": live.model_dump(mode="json") if live else None,
                        "state_unavailable": no_live,
                        "messages": [message_dict(m) for m in recent],
                        "archived": archived_dict(session_id, view.archived),
                        "retrying": view.retrying,
                        "ui": client.ui_link(session_id),
                    },
                    default=json_default,
                )
            )
            return
        table = Table(show_header=False)
        for k, v in [
            ("id", row.id),
            ("agent", row.agent_id),
            ("goal", row.goal),
            ("status", shown_status(row.status, live)),
            ("step", row.step),
            ("tokens", f"{row.tokens_in} in / {row.tokens_out} out"),
            ("cost", f"${row.cost_usd:.4f}"),
            ("summary", row.summary or "-"),
            ("ui", client.ui_link(session_id) or "-"),
            *([("live", no_live)] if no_live else []),
            *[("retrying", line) for line in view.retrying],
            *([("transcript", archived_line(session_id, view.archived))] if view.archived else []),
        ]:
            table.add_row(*plain(k, v))
        if live is not None:
            # Paused while waiting for an approval: both; paused alone says it once.
            paused = ", paused" if live.paused and live.status.value != "paused" else ""
            table.add_row(*plain("live", f"{live.status.value}{paused}, run {live.run_index}"))
            for a in live.pending_approvals:
                table.add_row(
                    *plain("approval", f"{a.approval_id}: {a.tool}({a.arguments_preview})")
                )
            if live.waiting_for:
                table.add_row(*plain("waiting for", waiting_for(live.waiting_for)))
                if live.waiting_for.startswith("a human reply"):
                    answer = f"{command_prefix()} say {session_id} 'YOUR ANSWER'"
                    table.add_row(*plain("answer with", answer))
        out.print(table)
        for m in recent:
            print_message(m, False)

    run_client(go, state_dir)


_PAUSABLE = ("running", "waiting_approval", "paused")


def shown_status(recorded: str, live: SessionState | None) -> str:
    """The status `show` tells a person: a session paused while an approval waits is
    recorded as waiting for it, but is paused (and the approval still pending)."""
    if live is None or not live.paused or recorded not in _PAUSABLE:
        return recorded
    pending = ", ".join(a.approval_id for a in live.pending_approvals)
    return f"paused (approval {pending} pending)" if pending else "paused"


def follow(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Stream a session's transcript as it lands, until the session ends."""
    run_client(lambda client: follow_session(client, session_id, as_json), state_dir)


def export(
    session_id: str,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or md")] = "jsonl",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    state_dir: StateOpt = None,
) -> None:
    """Export a session's transcript as JSONL or Markdown (streamed page by page)."""
    from vigil.activities.record.archived import archived_transcript
    from vigil.workers import inputs
    from vigil.workers.client import VigilError

    try:
        fmt = inputs.export_format(fmt)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go(client: VigilClient) -> None:
        # A local file written line by line as the export streams: blocking is fine here.
        handle = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115, ASYNC230
        try:
            # Closed here, in this task, if the write fails: left open, the generator is
            # closed at asyncio.run's shutdown instead, mid-transaction, with tracebacks.
            async with contextlib.aclosing(client.export(session_id, fmt)) as chunks:
                async for chunk in chunks:
                    handle.write(chunk)
                if not output:
                    handle.flush()  # a reader gone (`| head -1`) is found here, not at exit
        except BrokenPipeError:
            if output:
                raise
            # As every other command's output (rich's): stdout to /dev/null, exit quietly.
            out.on_broken_pipe()
        finally:
            if output:
                handle.close()
        row = await client.require_session(session_id)
        archived = archived_transcript(row.metadata)
        if archived is not None:  # the export holds the header alone: say where the rest is
            err.print(Text(f"note: transcript {archived_line(session_id, archived)}"))

    run_client(go, state_dir)


def transcript(
    session_id: str,
    after_seq: Annotated[
        int, typer.Option("--after-seq", min=-1, max=2**31 - 1, help="Messages after this seq.")
    ] = -1,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Messages on the page.")] = 100,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A page of a session's transcript, from its start or after a seq (as the API's)."""
    from vigil.activities.record.archived import archived_transcript

    async def go(client: VigilClient) -> None:
        row = await client.require_session(session_id)
        page, after = await client.transcript_page(session_id, after_seq=after_seq, limit=limit)
        archived = archived_transcript(row.metadata)
        if as_json:
            said = {
                "items": [message_dict(m) for m in page],
                "next_after_seq": after,
                "archived": archived_dict(session_id, archived),
            }
            out.print_json(json.dumps(said, default=json_default))
            return
        if not page and archived is None:
            where = f" after #{after_seq}" if after_seq >= 0 else ""
            nothing(f"no messages{where}", "the transcript ends before it" if where else None)
        for m in page:
            print_message(m, False)
        if after is not None:
            err.print(Text(f"more: {command_prefix()} transcript {session_id} --after-seq {after}"))
        if archived is not None:
            err.print(Text(f"note: transcript {archived_line(session_id, archived)}"))

    run_client(go, state_dir)


def archived_line(session_id: str, archived: ArchivedTranscript) -> str:
    """An archived transcript, said for a person: where, when, and how to restore it."""
    from vigil.activities.record.archived import restore_hint

    return as_invoked(
        f"archived {when(archived.archived_at)} to {archived.uri} "
        f"({archived.messages} messages, {archived.events} events); "
        f"`{restore_hint(session_id)}` brings it back"
    )


def archived_dict(session_id: str, archived: ArchivedTranscript | None) -> dict[str, object] | None:
    return None if archived is None else archived.shown(session_id)


def search(
    query: str,
    agent: AgentOpt = "default",
    limit: Annotated[int, typer.Option(min=1, help="At most this many hits.")] = 20,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Full-text search across an agent's sessions."""

    async def go(client: VigilClient) -> None:
        page = await client.search(agent, query, limit=limit)
        hits = list(getattr(page, "hits", page))

        def human() -> None:
            if not hits:
                hint = (
                    "searched the sessions of agent 'default'; name another with --agent"
                    if agent == "default"
                    else f"searched the sessions of agent {agent!r}"
                )
                nothing(f"no messages match {query!r}", hint)
                return
            shown = Table(Column("session", no_wrap=True), "seq", "role", "snippet")
            for h in hits:
                shown.add_row(*plain(h.session_id, h.seq, h.role), highlighted(h.snippet))
            out.print(shown)

        emit([asdict(h) for h in hits], as_json, human)

    run_client(go, state_dir)


# Temporal's bookkeeping: hidden from the summary a person reads (shown with --all).
_BOOKKEEPING = {
    "workflow_task_scheduled",
    "workflow_task_started",
    "workflow_task_completed",
    "activity_task_started",
    "activity_task_completed",
    "marker_recorded",
    "upsert_workflow_search_attributes",
    "workflow_properties_modified",
    "timer_fired",
    "workflow_execution_update_completed",
}


def history(
    session_id: str,
    all_: Annotated[
        bool, typer.Option("--all", help="Every event, workflow-task bookkeeping too.")
    ] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Temporal's event history of a session: what it did and who acted.

    Summarised for people; --all shows every event, and --json always holds every event."""

    async def go(client: VigilClient) -> None:
        lines = await client.history(session_id)

        def human() -> None:
            shown = [ln for ln in lines if all_ or ln.kind not in _BOOKKEEPING]
            rows = [(ln.event_id, when(ln.time), ln.kind, ln.detail) for ln in shown]
            out.print(table(("#", "time", "event", "detail"), rows))
            if len(shown) < len(lines):
                err.print(
                    f"{len(lines) - len(shown)} bookkeeping events not shown (--all shows them)"
                )

        emit([asdict(ln) for ln in lines], as_json, human)

    run_client(go, state_dir)


def register(app: typer.Typer) -> None:
    app.command()(start)
    app.command("list")(list_)
    app.command()(show)
    app.command()(follow)
    app.command()(export)
    app.command()(transcript)
    app.command()(search)
    app.command()(history)
