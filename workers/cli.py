"""The `vigil` command line (typer + rich).

Readable output by default, ``--json`` for scripts, and one clear line (never a
traceback) for the errors a user can fix. Exit codes: 0 ok, 1 a check or run failed,
2 bad input or configuration, 3 a server could not be reached, 4 not found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vigil.schema.limits import start_error
from vigil.schema.payloads import (
    FINAL_STATUSES,
    ApproveInput,
    Budget,
    MessageInput,
    PauseInput,
    RedirectInput,
    RejectInput,
    ResumeInput,
    ToolPolicy,
    WakeInput,
)
from vigil.workers import inputs
from vigil.workers.cli_agents import agent_app
from vigil.workers.cli_api import api_command, token_app
from vigil.workers.cli_hooks import trigger_app, webhook_app
from vigil.workers.cli_reconcile import reconcile_command
from vigil.workers.cli_secrets import secret_app
from vigil.workers.client import OVERLAP, VigilClient, VigilError, refuse_oversized
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack, StackError

T = TypeVar("T")
FINAL = {s.value for s in FINAL_STATUSES}

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4

app = typer.Typer(
    name="vigil",
    help="Durable autonomous AI agents on Temporal, PostgreSQL/pgvector and an object store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local stack without Docker.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
schedule_app = typer.Typer(help="Recurring goals as Temporal Schedules.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")
memory_app = typer.Typer(help="An agent's long-term memory.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")
artifact_app = typer.Typer(help="Artifacts in the object store.", no_args_is_help=True)
app.add_typer(artifact_app, name="artifact")
app.add_typer(agent_app, name="agent")
app.add_typer(secret_app, name="secret")
app.add_typer(token_app, name="token")
app.add_typer(trigger_app, name="trigger")
app.add_typer(webhook_app, name="webhook")
app.command("api")(api_command)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StateOpt = Annotated[
    str | None, typer.Option("--state-dir", help="Stack state folder (VIGIL_STATE_DIR).")
]
S3Opt = Annotated[
    bool,
    typer.Option("--with-minio", help="Also start MinIO (always with VIGIL_ARTIFACT_BACKEND=s3)."),
]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # Escaped: a message quoting user input ("[/x]", "[bold]") must not be read as markup.
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def load_settings(state_dir: str | None = None, with_minio: bool = False) -> Settings:
    overrides: dict[str, object] = {}
    if state_dir:
        overrides["state_dir"] = state_dir
    if with_minio:
        overrides["with_minio"] = True
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except Exception as exc:
        fail(f"bad configuration: {exc}".splitlines()[0], EXIT_USAGE)


def _plain(*cells: object) -> list[Text]:
    """Table cells shown as they are: data (goals, snippets with [[matches]], tool
    arguments) must not be read as rich markup, which would hide or choke on brackets."""
    return [Text(str(cell)) for cell in cells]


def _say(message: str) -> None:
    err.print(f"[dim]·[/] {message}")


@stack_app.command("up")
def stack_up(
    state_dir: StateOpt = None, with_minio: S3Opt = False, as_json: JsonOpt = False
) -> None:
    """Start Temporal, PostgreSQL (+pgvector) and, when asked, MinIO; migrate; wait until ready."""
    settings = load_settings(state_dir, with_minio)
    stack = Stack(settings, say=_say)
    try:
        stack.up()
    except StackError as exc:
        fail(str(exc), EXIT_FAILED)
    _print_status(stack, as_json)


@stack_app.command("down")
def stack_down(state_dir: StateOpt = None) -> None:
    """Stop every part of the embedded stack; data stays in the state folder."""
    settings = load_settings(state_dir)
    Stack(settings, say=_say).down()
    err.print("stack stopped")


@stack_app.command("status")
def stack_status(
    state_dir: StateOpt = None, with_minio: S3Opt = False, as_json: JsonOpt = False
) -> None:
    """Show each part and whether it answers."""
    stack = Stack(load_settings(state_dir, with_minio))
    if not _print_status(stack, as_json):
        raise typer.Exit(EXIT_FAILED)


def _print_status(stack: Stack, as_json: bool) -> bool:
    parts = stack.status()
    if as_json:
        out.print_json(json.dumps([asdict(p) for p in parts]))
    else:
        table = Table("part", "mode", "state", "where")
        for part in parts:
            state = "[green]up[/]" if part.running else "[red]down[/]"
            table.add_row(part.name, part.mode, state, part.detail)
        out.print(table)
        ui = stack.settings.endpoints().temporal_ui
        if ui:
            out.print(f"Temporal UI: {ui}")
    return all(p.running for p in parts)


@stack_app.command("rotate-key")
def stack_rotate_key(state_dir: StateOpt = None) -> None:
    """Add a new payload key to the stack's key file and make it current (old keys stay)."""
    from vigil.workers.codec import rotate_key_file

    settings = load_settings(state_dir)
    if settings.payload_keys is not None:
        fail("keys come from VIGIL_PAYLOAD_KEYS: add a key there and set VIGIL_PAYLOAD_KEY_ID")
    key_id = rotate_key_file(settings.resolved_state_dir)
    err.print(f"new payload key {key_id} is current; restart workers to encrypt with it")


@app.command("codec-server")
def codec_server(
    host: Annotated[str | None, typer.Option(help="Address (VIGIL_CODEC_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (VIGIL_CODEC_PORT).")] = None,
    state_dir: StateOpt = None,
) -> None:
    """Serve Temporal's codec protocol so Temporal UI and `temporal --codec-endpoint` can show
    an operator with the access token decrypted payloads."""
    from vigil.workers.codec import PayloadKeyError
    from vigil.workers.codec_server import serve

    settings = load_settings(state_dir)
    host = host or settings.codec_host
    port = port or settings.codec_port
    err.print(
        f"codec server on http://{host}:{port} (token: VIGIL_CODEC_TOKEN or "
        f"{settings.resolved_state_dir}/codec-token)"
    )
    try:
        serve(settings, host, port)
    except PayloadKeyError as exc:
        fail(str(exc), EXIT_USAGE)


@app.command()
def doctor(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Check every part for real: reachable, versions, pgvector, migrations, bucket, attributes."""
    from vigil.workers.doctor import run_checks

    settings = load_settings(state_dir)
    checks = asyncio.run(run_checks(settings))
    if as_json:
        out.print_json(json.dumps([asdict(c) for c in checks]))
    else:
        table = Table("part", "check", "result", "detail")
        for c in checks:
            table.add_row(c.part, c.check, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail)
        out.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(EXIT_FAILED)


# --- sessions -------------------------------------------------------------------------

AgentOpt = Annotated[str, typer.Option("--agent", "-a", help="Agent id.")]
AgentVersionOpt = Annotated[
    int | None,
    typer.Option("--agent-version", min=1, help="Pin this version of the agent's definition."),
]
UndefinedAgentOpt = Annotated[
    bool,
    typer.Option(
        "--undefined-agent",
        help="Start even though the agent has no definition (built-in tools, default model).",
    ),
]
ByOpt = Annotated[str, typer.Option("--by", help="Who is acting (recorded).")]
SignalOpt = Annotated[
    bool,
    typer.Option("--signal", help="Send a signal (fire and forget) instead of a validated update."),
]


def _by_default() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def run_client(fn: Callable[[VigilClient], Awaitable[T]], state_dir: str | None = None) -> T:
    """Run ``fn`` with a connected client; user-fixable errors become one line + exit code."""
    settings = load_settings(state_dir)

    async def go() -> T:
        client = await VigilClient.connect(settings)
        try:
            async with client.plain_errors():
                return await fn(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except VigilError as exc:
        fail(str(exc), exc.exit_code)
    except ValidationError as exc:
        fail(f"bad argument: {_first_error(exc)}", EXIT_USAGE)
    except BrokenPipeError:
        raise  # the reader went away (`vigil export ... | head`): main() exits quietly
    except OSError as exc:
        if exc.filename is not None:  # a local file (e.g. --output), not a server
            fail(f"{exc.strerror or exc}: {exc.filename}", EXIT_FAILED)
        fail(f"cannot reach a server: {exc}", EXIT_UNREACHABLE)


def _check(value: BaseModel) -> str:
    """Refuse oversized input before connecting to anything (the session's own limits);
    returns the ``by`` of the payload."""
    try:
        refuse_oversized(value)
    except VigilError as exc:
        fail(str(exc), exc.exit_code)
    return str(getattr(value, "by", ""))


def _first_error(exc: ValidationError) -> str:
    err0 = exc.errors()[0]
    where = ".".join(str(p) for p in err0.get("loc", ()))
    return f"{where}: {err0.get('msg')}" if where else str(err0.get("msg"))


def _json_arg(raw: str | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at char {exc.pos}", EXIT_USAGE)
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object", EXIT_USAGE)
    return value


def _print_message(msg: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(_message_dict(msg)), indent=None)
        return
    who = msg.role if not msg.name else f"{msg.role}:{msg.name}"
    colour = {"user": "cyan", "assistant": "green", "tool": "yellow", "system": "magenta"}.get(
        msg.role, "white"
    )
    out.print(f"[bold {colour}]#{msg.seq} {escape(who)}[/] ", end="")
    out.print(msg.content or "", markup=False, highlight=False)
    for call in msg.tool_calls or []:
        out.print(f"    [dim]→ {escape(str(call['name']))}({escape(str(call['arguments']))})[/]")


def _message_dict(msg: Any) -> dict[str, Any]:
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


def _emit(value: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        out.print_json(json.dumps(value, default=str))
    else:
        human()


@app.command()
def start(
    goal: Annotated[str, typer.Argument(help="What the agent should achieve.")],
    agent: AgentOpt = "default",
    session_id: Annotated[
        str | None, typer.Option("--id", help="Session id (workflow id).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Step budget (the definition's, or 50).")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Token budget.")] = None,
    max_cost: Annotated[float | None, typer.Option(help="Cost budget in USD.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Wall-clock budget.")] = None,
    approve_tools: Annotated[
        str | None,
        typer.Option(help="Comma-separated tools that need approval (default policy otherwise)."),
    ] = None,
    allow_tools: Annotated[str | None, typer.Option(help="Comma-separated allowed tools.")] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    follow_: Annotated[bool, typer.Option("--follow", help="Stream the transcript live.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the session to end.")] = False,
    agent_version: AgentVersionOpt = None,
    undefined_agent: UndefinedAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a session of an agent's definition (the options override it); prints its id
    and Temporal UI link."""
    too_big = start_error(goal, system_prompt)
    if too_big is not None:
        fail(f"refused before sending: {too_big}", EXIT_USAGE)
    policy = ToolPolicy(
        require_approval=_csv(approve_tools),
        allowed=_csv(allow_tools),
    )
    budget = given_budget(
        max_steps=max_steps, max_tokens=max_tokens, max_cost_usd=max_cost, max_seconds=max_seconds
    )

    async def go(client: VigilClient) -> None:
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
        if as_json and not (follow_ or wait):
            out.print_json(json.dumps({"id": started.id, "ui": started.ui_url}))
            return
        if not as_json:
            out.print(f"started [bold]{escape(started.id)}[/]")
            if started.ui_url:
                out.print(f"Temporal UI: {started.ui_url}")
        if follow_:
            await _follow(client, started.id, as_json)
        elif wait:
            await _wait_end(client, started.id, as_json)

    run_client(go, state_dir)


def given_budget(**limits: Any) -> Budget:
    """A Budget holding only the limits given (so only those override a definition's)."""
    return Budget(**{k: v for k, v in limits.items() if v is not None})


def _csv(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


async def _follow(client: VigilClient, session_id: str, as_json: bool) -> None:
    await client.require_session_soon(session_id)
    announced: set[str] = set()

    async def announce() -> None:
        await _announce_approvals(client, session_id, announced)

    async for msg in client.follow(session_id, on_approval=None if as_json else announce):
        _print_message(msg, as_json)
    await _print_end(client, session_id, as_json)


async def _announce_approvals(client: VigilClient, session_id: str, seen: set[str]) -> None:
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


async def _wait_end(client: VigilClient, session_id: str, as_json: bool) -> None:
    await client.require_session_soon(session_id)  # says at once when no worker polls
    with err.status(f"waiting for {session_id} to end ..."):
        await client.result(session_id)
    await _print_end(client, session_id, as_json)


async def _print_end(client: VigilClient, session_id: str, as_json: bool) -> None:
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


@app.command("list")
def list_(
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or e.g. 2h, 3d.")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List sessions from the record, with Temporal's view of each."""
    since_dt = _parse_since(since)

    async def go(client: VigilClient) -> None:
        rows = await client.list_sessions(agent=agent, status=status, since=since_dt, limit=limit)

        def human() -> None:
            table = Table("id", "agent", "status", "step", "temporal", "created", "goal")
            for r in rows:
                table.add_row(
                    *_plain(
                        r.id,
                        r.agent_id,
                        r.status,
                        r.step,
                        r.temporal_status or "-",
                        r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                        r.goal[:60],
                    )
                )
            out.print(table)

        _emit([asdict(r) for r in rows], as_json, human)

    run_client(go, state_dir)


def _parse_since(raw: str | None, what: str = "--since") -> datetime | None:
    try:
        return inputs.parse_since(raw, what)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)


@app.command()
def show(
    session_id: str,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
    last: Annotated[int, typer.Option(help="How many recent messages to show.")] = 20,
) -> None:
    """A session's record, live state and recent messages."""

    async def go(client: VigilClient) -> None:
        view = await client.session_view(session_id, last)
        row, live, recent = view.session, view.state, view.messages
        no_live = f"unavailable: {view.state_unavailable}" if view.state_unavailable else None
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "session": asdict(row),
                        "state": live.model_dump(mode="json") if live else None,
                        "state_unavailable": no_live,
                        "messages": [_message_dict(m) for m in recent],
                        "ui": client.ui_link(session_id),
                    },
                    default=str,
                )
            )
            return
        table = Table(show_header=False)
        for k, v in [
            ("id", row.id),
            ("agent", row.agent_id),
            ("goal", row.goal),
            ("status", row.status),
            ("step", row.step),
            ("tokens", f"{row.tokens_in} in / {row.tokens_out} out"),
            ("cost", f"${row.cost_usd:.4f}"),
            ("summary", row.summary or "-"),
            ("ui", client.ui_link(session_id) or "-"),
            *([("live", no_live)] if no_live else []),
        ]:
            table.add_row(*_plain(k, v))
        if live is not None:
            table.add_row(
                *_plain("live", f"{live.status.value}, paused={live.paused}, run {live.run_index}")
            )
            for a in live.pending_approvals:
                table.add_row(
                    *_plain("approval", f"{a.approval_id}: {a.tool}({a.arguments_preview})")
                )
            if live.waiting_for:
                table.add_row(*_plain("waiting for", live.waiting_for))
        out.print(table)
        for m in recent:
            _print_message(m, False)

    run_client(go, state_dir)


@app.command()
def follow(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Stream a session's transcript as it lands, until the session ends."""
    run_client(lambda client: _follow(client, session_id, as_json), state_dir)


def _ack_out(ack: Any, as_json: bool, what: str) -> None:
    if as_json:
        out.print_json(json.dumps(ack.model_dump(mode="json") if ack else {"sent": True}))
    elif ack is None:
        out.print(f"{what}: signal sent")
    else:
        held = ", paused" if ack.paused and ack.status.value != "paused" else ""
        out.print(f"{what}: {ack.message} (status {ack.status.value}{held})")


@app.command()
def approve(
    session_id: str,
    approval_id: str,
    note: Annotated[str | None, typer.Option("--note")] = None,
    edit: Annotated[
        str | None, typer.Option("--edit", help="Replacement arguments as JSON.")
    ] = None,
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending tool call (optionally with edited arguments)."""
    edited = _json_arg(edit, "--edit")
    who = _check(
        ApproveInput(
            approval_id=approval_id, by=by or _by_default(), note=note, edited_arguments=edited
        )
    )
    run_client(
        lambda c: _ack_then(
            c.approve(
                session_id,
                approval_id,
                by=who,
                note=note,
                edited_arguments=edited,
                wait=not signal_,
            ),
            as_json,
            "approve",
        ),
        state_dir,
    )


async def _ack_then(coro: Awaitable[Any], as_json: bool, what: str) -> None:
    _ack_out(await coro, as_json, what)


@app.command()
def reject(
    session_id: str,
    approval_id: str,
    reason: Annotated[str, typer.Option("--reason")] = "",
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a pending tool call; the model is told why."""
    who = _check(RejectInput(approval_id=approval_id, by=by or _by_default(), reason=reason))
    run_client(
        lambda c: _ack_then(
            c.reject(session_id, approval_id, by=who, reason=reason, wait=not signal_),
            as_json,
            "reject",
        ),
        state_dir,
    )


@app.command()
def pause(
    session_id: str,
    reason: Annotated[str, typer.Option("--reason")] = "",
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold the session between steps (no budget is spent while paused)."""
    who = _check(PauseInput(by=by or _by_default(), reason=reason))
    run_client(
        lambda c: _ack_then(
            c.pause(session_id, by=who, reason=reason, wait=not signal_),
            as_json,
            "pause",
        ),
        state_dir,
    )


@app.command()
def resume(
    session_id: str,
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume a paused session exactly where it stopped."""
    who = _check(ResumeInput(by=by or _by_default()))
    run_client(
        lambda c: _ack_then(c.resume(session_id, by=who, wait=not signal_), as_json, "resume"),
        state_dir,
    )


@app.command()
def say(
    session_id: str,
    text_: Annotated[str, typer.Argument(metavar="TEXT")],
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the agent a message (it lands before its next step)."""
    who = _check(MessageInput(text=text_, by=by or _by_default()))
    run_client(
        lambda c: _ack_then(c.say(session_id, text_, by=who, wait=not signal_), as_json, "say"),
        state_dir,
    )


@app.command()
def redirect(
    session_id: str,
    goal: str,
    by: ByOpt = "",
    signal_: SignalOpt = False,
    agent_version: Annotated[
        int | None,
        typer.Option("--agent-version", min=1, help="Also move to this agent version."),
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give the session a new goal (and, when asked, a new version of its agent)."""
    who = _check(RedirectInput(goal=goal, by=by or _by_default()))
    run_client(
        lambda c: _ack_then(
            c.redirect(session_id, goal, by=who, wait=not signal_, agent_version=agent_version),
            as_json,
            "redirect",
        ),
        state_dir,
    )


@app.command()
def wake(
    session_id: str,
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wake a session sleeping on a timer."""
    who = _check(WakeInput(by=by or _by_default()))
    run_client(
        lambda c: _ack_then(c.wake(session_id, by=who, wait=not signal_), as_json, "wake"),
        state_dir,
    )


@app.command()
def cancel(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a session (Temporal's cancel; the record says cancelled)."""

    async def go(client: VigilClient) -> None:
        await client.cancel(session_id)
        _emit(
            {"id": session_id, "cancel": "requested"},
            as_json,
            lambda: out.print(f"cancel requested for {session_id}"),
        )

    run_client(go, state_dir)


@app.command()
def history(session_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Temporal's event history of a session, one line per event."""

    async def go(client: VigilClient) -> None:
        lines = await client.history(session_id)

        def human() -> None:
            table = Table("#", "time", "event", "detail")
            for ln in lines:
                table.add_row(
                    *_plain(ln.event_id, ln.time.strftime("%H:%M:%S.%f")[:-3], ln.kind, ln.detail)
                )
            out.print(table)

        _emit([asdict(ln) for ln in lines], as_json, human)

    run_client(go, state_dir)


@app.command()
def worker(
    state_dir: StateOpt = None,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            help="Module with @vigil.tool functions to load (repeatable; VIGIL_TOOL_MODULES).",
        ),
    ] = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help="Queue to poll (VIGIL_TASK_QUEUE).")
    ] = None,
    tools_only: Annotated[
        bool,
        typer.Option("--tools-only", help="A tool worker: serve only its tools, no sessions."),
    ] = False,
) -> None:
    """Run a worker: polls the task queue and runs sessions until SIGINT/SIGTERM."""
    from vigil.workers.codec import PayloadKeyError
    from vigil.workers.logs import configure
    from vigil.workers.tool_wiring import with_worker_flags
    from vigil.workers.worker import run_worker

    settings = with_worker_flags(load_settings(state_dir), tools or [], task_queue, tools_only)
    configure(settings.log_format, settings.log_level)
    from vigil.activities.tools.loader import ToolLoadError

    try:
        asyncio.run(run_worker(settings))
    except PayloadKeyError as exc:
        fail(f"bad configuration: {exc}", EXIT_USAGE)
    except ToolLoadError as exc:
        fail(f"worker could not start: {exc}", EXIT_USAGE)
    except (OSError, RuntimeError) as exc:
        fail(f"worker could not start: {exc}", EXIT_UNREACHABLE)


@app.command()
def demo(
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve/--ask", help="Approve without asking.")
    ] = True,
    by: ByOpt = "",
    state_dir: StateOpt = None,
) -> None:
    """Run a demo session on the scripted model: one approval, then finish; print the transcript."""
    from vigil.workers.demo import DemoFailed, run_demo

    settings = load_settings(state_dir)
    try:
        code = asyncio.run(
            run_demo(settings, out, auto_approve=auto_approve, by=by or _by_default())
        )
    except VigilError as exc:
        fail(str(exc), exc.exit_code)
    except DemoFailed as exc:
        fail(str(exc))
    raise typer.Exit(code)


# --- schedules --------------------------------------------------------------------------


def _duration(raw: str | None, what: str) -> timedelta | None:
    try:
        return inputs.parse_duration(raw, what)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)


@schedule_app.command("create")
def schedule_create(
    schedule_id: str,
    goal: Annotated[str, typer.Option("--goal", help="The goal of every run.")],
    agent: AgentOpt = "default",
    cron: Annotated[
        str | None, typer.Option(help="Cron expression, e.g. '0 9 * * MON-FRI'.")
    ] = None,
    every: Annotated[str | None, typer.Option(help="Interval, e.g. 15m, 6h, 1d.")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone for cron.")] = None,
    jitter: Annotated[str | None, typer.Option(help="Random delay per run, e.g. 30s.")] = None,
    overlap: Annotated[str, typer.Option(help="|".join(OVERLAP))] = "skip",
    catchup: Annotated[str | None, typer.Option(help="Catch-up window, e.g. 1h.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create paused.")] = False,
    max_steps: Annotated[int | None, typer.Option()] = None,
    approve_tools: Annotated[str | None, typer.Option()] = None,
    agent_version: Annotated[
        int | None,
        typer.Option("--agent-version", min=1, help="Pin a version; each run's newest otherwise."),
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a recurring goal: each run is an AgentSession from this template."""
    try:
        inputs.check_schedule_id(schedule_id)
        timing = inputs.schedule_timing(
            cron=cron, every=every, time_zone=tz, jitter=jitter, catchup=catchup, overlap=overlap
        )
        template = inputs.schedule_template(
            agent=agent,
            goal=goal,
            max_steps=max_steps,
            require_approval=_csv(approve_tools),
            agent_version=agent_version,
        )
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go(client: VigilClient) -> None:
        await client.create_schedule(
            schedule_id,
            template,
            cron=timing.cron,
            every=timing.every,
            time_zone=timing.time_zone,
            jitter=timing.jitter,
            overlap=timing.overlap,
            catchup_window=timing.catchup,
            paused=paused,
        )
        _emit(
            {"id": schedule_id, "created": True},
            as_json,
            lambda: out.print(f"schedule {schedule_id} created"),
        )

    run_client(go, state_dir)


@schedule_app.command("list")
def schedule_list(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List schedules with their next run times."""

    async def go(client: VigilClient) -> None:
        rows = await client.list_schedules()

        def human() -> None:
            table = Table("id", "paused", "next runs", "recent")
            for r in rows:
                table.add_row(*_plain(r["id"], r["paused"], ", ".join(r["next"]), r["recent"]))
            out.print(table)

        _emit(rows, as_json, human)

    run_client(go, state_dir)


def _schedule_op(
    schedule_id: str,
    what: str,
    op: Callable[[VigilClient], Awaitable[None]],
    state_dir: str | None,
    as_json: bool,
) -> None:
    async def go(client: VigilClient) -> None:
        await op(client)
        _emit(
            {"id": schedule_id, what: True},
            as_json,
            lambda: out.print(f"schedule {schedule_id}: {what}"),
        )

    run_client(go, state_dir)


@schedule_app.command("pause")
def schedule_pause(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Pause a schedule (no new runs)."""
    _schedule_op(schedule_id, "paused", lambda c: c.pause_schedule(schedule_id), state_dir, as_json)


@schedule_app.command("resume")
def schedule_resume(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Unpause a schedule."""
    _schedule_op(
        schedule_id, "resumed", lambda c: c.unpause_schedule(schedule_id), state_dir, as_json
    )


@schedule_app.command("trigger")
def schedule_trigger(
    schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False
) -> None:
    """Start one run now."""
    _schedule_op(
        schedule_id, "triggered", lambda c: c.trigger_schedule(schedule_id), state_dir, as_json
    )


@schedule_app.command("backfill")
def schedule_backfill(
    schedule_id: str,
    start_at: Annotated[str, typer.Option("--from", help="ISO start time.")],
    end_at: Annotated[str, typer.Option("--to", help="ISO end time.")],
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the schedule for the times it would have run in a past window."""
    start_dt, end_dt = _parse_since(start_at, "--from"), _parse_since(end_at, "--to")
    assert start_dt is not None and end_dt is not None
    _schedule_op(
        schedule_id,
        "backfilled",
        lambda c: c.backfill_schedule(schedule_id, start_dt, end_dt),
        state_dir,
        as_json,
    )


@schedule_app.command("delete")
def schedule_delete(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a schedule (its past runs stay in the record)."""
    _schedule_op(
        schedule_id, "deleted", lambda c: c.delete_schedule(schedule_id), state_dir, as_json
    )


@schedule_app.command("runs")
def schedule_runs(schedule_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Every run of a goal, from the record."""

    async def go(client: VigilClient) -> None:
        rows = await client.schedule_runs(schedule_id)

        def human() -> None:
            table = Table("id", "status", "step", "created")
            for r in rows:
                table.add_row(*_plain(r.id, r.status, r.step, r.created_at.isoformat()))
            out.print(table)

        _emit([asdict(r) for r in rows], as_json, human)

    run_client(go, state_dir)


# --- export, search, memory, artifacts ---------------------------------------------------


@app.command()
def export(
    session_id: str,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or md")] = "jsonl",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    state_dir: StateOpt = None,
) -> None:
    """Export a session's transcript as JSONL or Markdown (streamed page by page)."""
    try:
        fmt = inputs.export_format(fmt)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)

    async def go(client: VigilClient) -> None:
        # A local file written line by line as the export streams: blocking is fine here.
        handle = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115, ASYNC230
        try:
            async for chunk in client.export(session_id, fmt):
                handle.write(chunk)
        finally:
            if output:
                handle.close()

    run_client(go, state_dir)


@app.command()
def search(
    query: str,
    agent: AgentOpt = "default",
    limit: Annotated[int, typer.Option()] = 20,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Full-text search across an agent's sessions."""

    async def go(client: VigilClient) -> None:
        page = await client.search(agent, query, limit=limit)
        hits = list(getattr(page, "hits", page))

        def human() -> None:
            table = Table("session", "seq", "role", "snippet")
            for h in hits:
                table.add_row(*_plain(h.session_id, h.seq, h.role, h.snippet))
            out.print(table)

        _emit([asdict(h) for h in hits], as_json, human)

    run_client(go, state_dir)


@memory_app.command("search")
def memory_search(
    query: str,
    agent: AgentOpt = "default",
    k: Annotated[int, typer.Option("-k")] = 10,
    include_superseded: Annotated[bool, typer.Option("--all", help="Include superseded.")] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hybrid search (vector + full text) of an agent's long-term memory."""

    async def go(client: VigilClient) -> None:
        found = await client.memory_search(agent, query, k=k, include_superseded=include_superseded)

        def human() -> None:
            table = Table("id", "kind", "subject", "score", "content")
            for m in found:
                table.add_row(
                    *_plain(m.id, m.kind, m.subject or "-", f"{m.score:.4f}", m.content[:80])
                )
            out.print(table)

        _emit([asdict(m) for m in found], as_json, human)

    run_client(go, state_dir)


@memory_app.command("add")
def memory_add(
    content: str,
    agent: AgentOpt = "default",
    kind: Annotated[str, typer.Option(help="fact, reflection or lesson")] = "fact",
    subject: Annotated[str | None, typer.Option()] = None,
    importance: Annotated[float, typer.Option()] = 0.5,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a memory (merged with a near-duplicate, or superseding one about the same subject)."""

    async def go(client: VigilClient) -> None:
        result = await client.memory_add(
            agent, content, kind=kind, subject=subject, importance=importance
        )
        _emit(
            asdict(result), as_json, lambda: out.print(f"memory {result.action} (id {result.id})")
        )

    run_client(go, state_dir)


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
        _emit(
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
                table.add_row(*_plain(r.name, r.size, r.sha256[:16], r.mime_type))
            out.print(table)

        _emit([asdict(r) for r in refs], as_json, human)

    run_client(go, state_dir)


# Command groups in their own modules (they use this module's helpers, so come last).
from vigil.workers.cli_tools import tools_app  # noqa: E402

app.add_typer(tools_app, name="tools")


def main() -> None:
    _exit(_run_app())


app.command("reconcile")(reconcile_command)


def _run_app() -> int:
    try:
        # Not standalone: a usage mistake (bad option value, unknown option, missing
        # argument) is caught below and told in one line instead of typer's panel.
        code = app(standalone_mode=False)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `vigil schedule`: help shown
            return EXIT_USAGE
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}")
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except typer.Abort:
        err.print("aborted")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `vigil export ... | head`
        return 0
    return code if isinstance(code, int) else 0


def _exit(code: int) -> NoReturn:
    """Exit without interpreter teardown: the Temporal client's Rust threads may still be
    alive then, and CPython's finalisation can abort the process under them
    (temporalio/sdk-python#300), turning a finished command into SIGABRT."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# Command groups in modules of their own register themselves on `app` when imported.
from vigil.workers import cli_data as _cli_data  # noqa: E402, F401
from vigil.workers import cli_memory as _cli_memory  # noqa: E402, F401

if __name__ == "__main__":
    # `python -m vigil.workers.cli`: run the importable module, whose `app` the command
    # groups above registered on (this file, run as __main__, is a copy of it).
    from vigil.workers.cli import main as _main

    _main()
