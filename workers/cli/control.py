"""Human control of a running session: `vigil approve | reject | pause | resume | say |
redirect | wake | cancel`.

Each command checks its payload against the session's own limits before connecting, sends
it (a validated update, or a signal with ``--signal``) and prints the acknowledgement.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vigil.workers.cli.common import (
    EXIT_FAILED,
    ByOpt,
    JsonOpt,
    SignalOpt,
    StateOpt,
    by_default,
    check,
    command_prefix,
    emit,
    err,
    fail,
    json_arg,
    nothing,
    out,
    run_client,
    stdin_text,
    table,
    when,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from vigil.workers.client import VigilClient

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded).")]


def _ack_out(ack: Any, as_json: bool, what: str) -> None:
    if as_json:
        out.print_json(json.dumps(ack.model_dump(mode="json") if ack else {"sent": True}))
    elif ack is None:
        out.print(f"{what}: signal sent")
    else:
        # Each fact once: no "(status paused)" after "paused".
        said = [] if ack.status.value == ack.message else [f"status {ack.status.value}"]
        if ack.paused and "paused" not in (ack.status.value, ack.message):
            said.append("paused")
        out.print(f"{what}: {ack.message}" + (f" ({', '.join(said)})" if said else ""))


def _control(
    what: str,
    payload: BaseModel,
    send: Callable[[VigilClient, str], Awaitable[Any]],
    state_dir: str | None,
    as_json: bool,
) -> None:
    """Check ``payload`` (refused before connecting when oversized), send it with ``send``
    (given the client and who acts) and print the acknowledgement."""
    who = check(payload)

    async def go(client: VigilClient) -> None:
        _ack_out(await send(client, who), as_json, what)

    run_client(go, state_dir)


def approve(
    session_id: str,
    approval_id: str,
    note: Annotated[
        str | None, typer.Option("--note", help="Why, in the record with the decision.")
    ] = None,
    edit: Annotated[
        str | None, typer.Option("--edit", help="Replacement arguments as JSON.")
    ] = None,
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending tool call (optionally with edited arguments)."""
    from vigil.schema.payloads import ApproveInput

    edited = json_arg(edit, "--edit")
    payload = ApproveInput(
        approval_id=approval_id, by=by or by_default(), note=note, edited_arguments=edited
    )
    _control(
        "approve",
        payload,
        lambda c, who: c.approve(
            session_id, approval_id, by=who, note=note, edited_arguments=edited, wait=not signal_
        ),
        state_dir,
        as_json,
    )


def reject(
    session_id: str,
    approval_id: str,
    reason: ReasonOpt = "",
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a pending tool call; the model is told why."""
    from vigil.schema.payloads import RejectInput

    _control(
        "reject",
        RejectInput(approval_id=approval_id, by=by or by_default(), reason=reason),
        lambda c, who: c.reject(session_id, approval_id, by=who, reason=reason, wait=not signal_),
        state_dir,
        as_json,
    )


def pause(
    session_id: str,
    reason: ReasonOpt = "",
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hold the session between steps (no budget is spent while paused)."""
    from vigil.schema.payloads import PauseInput

    _control(
        "pause",
        PauseInput(by=by or by_default(), reason=reason),
        lambda c, who: c.pause(session_id, by=who, reason=reason, wait=not signal_),
        state_dir,
        as_json,
    )


def resume(
    session_id: str,
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resume a paused session exactly where it stopped."""
    from vigil.schema.payloads import ResumeInput

    _control(
        "resume",
        ResumeInput(by=by or by_default()),
        lambda c, who: c.resume(session_id, by=who, wait=not signal_),
        state_dir,
        as_json,
    )


def say(
    session_id: str,
    text_: Annotated[str, typer.Argument(metavar="TEXT")],
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send the agent a message (it lands before its next step).

    TEXT `-` reads the message from standard input."""
    from vigil.schema.payloads import MessageInput

    if text_ == "-":
        text_ = stdin_text()
    _control(
        "say",
        MessageInput(text=text_, by=by or by_default()),
        lambda c, who: c.say(session_id, text_, by=who, wait=not signal_),
        state_dir,
        as_json,
    )


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
    from vigil.schema.payloads import RedirectInput

    async def send(client: VigilClient, who: str) -> Any:
        ack = await client.redirect(
            session_id, goal, by=who, wait=not signal_, agent_version=agent_version
        )
        if ack is not None and ack.accepted:
            await _stale_approvals(client, session_id)
        return ack

    _control("redirect", RedirectInput(goal=goal, by=by or by_default()), send, state_dir, as_json)


async def _stale_approvals(client: VigilClient, session_id: str) -> None:
    """A note on stderr of the approvals that still wait after a redirect: asked for the
    old goal, approving one runs that call as it was asked."""
    from vigil.workers.client import VigilError

    try:
        waiting = (await client.state(session_id)).pending_approvals
    except VigilError:
        return
    prefix = command_prefix()
    for a in waiting:
        err.print(
            f"note: approval {a.approval_id} ({a.tool}) was asked for the old goal and still "
            f"waits: {prefix} reject {session_id} {a.approval_id} --reason 'new goal' if it "
            "no longer fits",
            markup=False,
        )


def wake(
    session_id: str,
    reason: ReasonOpt = "",
    by: ByOpt = "",
    signal_: SignalOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wake a session sleeping on a timer."""
    from vigil.schema.payloads import WakeInput

    _control(
        "wake",
        WakeInput(by=by or by_default(), reason=reason),
        lambda c, who: c.wake(session_id, by=who, reason=reason, wait=not signal_),
        state_dir,
        as_json,
    )


def cancel(
    session_id: str,
    reason: ReasonOpt = "",
    by: ByOpt = "",
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a session: Temporal's cancel, carrying who and why.

    The record then says cancelled, with --by and --reason."""
    from vigil.schema.payloads import PauseInput

    who = check(PauseInput(by=by or by_default(), reason=reason))  # the same limits

    async def go(client: VigilClient) -> None:
        from vigil.workers.cli.sessions import warn_when_no_worker

        queue = await client.cancel(session_id, by=who, reason=reason)
        emit(
            {"id": session_id, "cancel": "requested", "by": who, "reason": reason},
            as_json,
            lambda: out.print(f"cancel requested for {session_id}"),
        )
        await warn_when_no_worker(
            client, queue, what=f"session {session_id} ends cancelled only once one takes it"
        )

    run_client(go, state_dir)


def terminate(
    session_id: str,
    reason: ReasonOpt = "",
    by: ByOpt = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End a session at once (Temporal's terminate), for one no worker takes or one that is
    stuck: a cancel waits for a worker to write the session's end. Nothing of it runs
    again; its record is closed as terminated, its open step left as it was."""
    from vigil.schema.payloads import PauseInput

    who = check(PauseInput(by=by or by_default(), reason=reason))  # the same limits

    async def go(client: VigilClient) -> None:
        if not yes:
            try:
                confirmed = typer.confirm(
                    f"Terminate {session_id}? It does not end as a cancel does: nothing of "
                    "it runs again",
                    err=True,
                )
            except typer.Abort:  # no answer (standard input ended): the prompt's line ends
                err.print()
                confirmed = False
            if not confirmed:
                fail("not terminated: answer y, or give --yes", EXIT_FAILED)
        status = await client.terminate(session_id, by=who, reason=reason)
        emit(
            {"id": session_id, "terminated": True, "status": status},
            as_json,
            lambda: out.print(
                f"session {session_id} terminated"
                + (f"; its record says {status}" if status else "; no worker had taken it")
            ),
        )

    run_client(go, state_dir)


def approvals(
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 200,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The approvals waiting for a person across sessions, oldest first, with the commands
    that answer each (the API's GET /approvals)."""
    from vigil.schema.payloads import preview, readable_arguments

    async def go(client: VigilClient) -> None:
        page = await client.pending_approvals(agent=agent, limit=limit)
        prefix = command_prefix()

        def human() -> None:
            if not page.items:
                nothing("no approval waits", f"for agent {agent!r}" if agent else None)
                return
            cells = [
                (
                    r.session_id,
                    r.approval_id,
                    r.agent_id,
                    r.tool,
                    # Cut by characters: at a word, a long URL was all cut away.
                    preview(readable_arguments(r.arguments), 160),
                    when(r.requested_at),
                )
                for r in page.items
            ]
            headers = ("session", "approval", "agent", "tool", "arguments", "asked")
            out.print(table(headers, cells, whole=2))
            first = page.items[0]
            out.print(
                f"answer with: {prefix} approve SESSION APPROVAL | {prefix} reject SESSION "
                f"APPROVAL --reason ...   (e.g. {prefix} approve {first.session_id} "
                f"{first.approval_id})",
                markup=False,
            )
            if page.next_cursor is not None:
                out.print(f"(the oldest {len(page.items)}; more wait: --limit)", markup=False)

        if as_json and page.next_cursor is not None:  # the list's shape stays a list
            err.print(f"the oldest {len(page.items)} approval waits; more wait: --limit")
        emit(
            [
                {
                    **{k: v for k, v in asdict(r).items() if k != "requested_at"},
                    "requested_at": r.requested_at.isoformat(),
                }
                for r in page.items
            ],
            as_json,
            human,
        )

    run_client(go, state_dir)


def register(app: typer.Typer) -> None:
    for command in (approve, reject, pause, resume, say, redirect, wake, cancel):
        app.command()(command)
    app.command()(approvals)
    app.command()(terminate)
