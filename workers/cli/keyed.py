"""`vigil message AGENT --key KEY TEXT`: a message to the session of a key (a
conversation), started first when none runs; `--wait` prints the reply that answers it.

The CLI face of ``POST /v1/agents/{name}/keys/{key}/messages`` (workers/keyed.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vigil.workers.cli.common import (
    EXIT_USAGE,
    AgentVersionOpt,
    ByOpt,
    JsonOpt,
    StateOpt,
    UndefinedAgentOpt,
    by_default,
    check,
    err,
    escape,
    fail,
    out,
    run_client,
    stdin_text,
)
from vigil.workers.cli.render import end_of, exit_for, print_end, print_waiting_approvals

if TYPE_CHECKING:
    from vigil.workers.client import VigilClient


def message(
    agent: Annotated[
        str, typer.Argument(metavar="AGENT", help="The agent whose session of the key to message.")
    ],
    text_: Annotated[str, typer.Argument(metavar="TEXT", help="The message (`-`: stdin).")],
    key: Annotated[
        str, typer.Option("--key", "-k", help="Names the conversation, e.g. a customer id.")
    ],
    goal: Annotated[
        str | None,
        typer.Option(
            help="The session's goal if this message starts it (a default names the key)."
        ),
    ] = None,
    idle: Annotated[
        str | None,
        typer.Option(
            help="If this message starts the session: how long it waits for each next message "
            "before it ends (e.g. 30m, 2h; the definition's conversation_idle_seconds otherwise)."
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the reply that answers the message; print it.")
    ] = False,
    by: ByOpt = "",
    agent_version: AgentVersionOpt = None,
    undefined_agent: UndefinedAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a message to the session of KEY, starting it when none runs; prints its id.

    A key's session is a conversation: each reply answers the messages so far and the
    session waits for the next one. Once it has ended, the key's next message starts the
    key's next session."""
    from vigil.schema.payloads import MessageInput
    from vigil.workers.client import VigilError
    from vigil.workers.inputs import parse_duration

    if text_ == "-":
        text_ = stdin_text()
    who = check(MessageInput(text=text_, by=by or by_default()))
    try:
        idle_for = parse_duration(idle, "--idle", allow_zero=False)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)
    start: dict[str, Any] = {}
    if idle_for is not None:
        start["conversation_idle_seconds"] = idle_for.total_seconds()
    # Options that shape a new session only: a running one keeps its own, said so.
    for_a_start = [
        flag
        for flag, given in (("--goal", goal), ("--idle", idle), ("--agent-version", agent_version))
        if given is not None
    ]

    async def go(client: VigilClient) -> None:
        from vigil.workers.keyed import answer, message_by_key

        sent = await message_by_key(
            client,
            agent,
            key,
            text_,
            by=who,
            goal=goal,
            agent_version=agent_version,
            allow_undefined=True if undefined_agent else None,
            awaits_answer=wait,
            tell_started=bool(for_a_start),
            **start,
        )
        ack = sent.ack
        if for_a_start and not sent.started:
            err.print(
                f"warning: only a key's new session takes {', '.join(for_a_start)}: "
                f"{sent.session_id} was running, and keeps its own",
                markup=False,
                highlight=False,
            )
        result = {
            "session_id": sent.session_id,
            "accepted": ack.accepted,
            "status": ack.status.value,
            "message": ack.message,
            "follows": sent.follows,
            "queued": sent.queued,
        }
        if not as_json:
            out.print(f"session [bold]{escape(sent.session_id)}[/]: {escape(ack.message)}")
            if sent.follows is not None:
                out.print(
                    f"  a new session of key {escape(repr(key))}: {escape(sent.follows)} had ended"
                )
        if not wait:
            if as_json:
                out.print_json(json.dumps(result))
            return

        async def approval() -> None:
            if not as_json:
                await print_waiting_approvals(client, sent.session_id)

        with err.status(f"waiting for the answer of {sent.session_id} ..."):
            reply = await answer(client, sent, text_, by=who, on_approval=approval)
        if reply is None:  # the session ended first: say how
            if not as_json:
                await print_end(client, sent.session_id, as_json)
                return
            end = await end_of(client, sent.session_id)  # one document, the end in it
            out.print_json(json.dumps({**result, "answer": None, "end": end}), indent=None)
            exit_for(end)
            return
        if as_json:
            out.print_json(json.dumps({**result, "answer": reply.content}), indent=None)
        else:
            out.print(reply.content, markup=False, highlight=False)

    run_client(go, state_dir)


def register(app: typer.Typer) -> None:
    app.command()(message)
