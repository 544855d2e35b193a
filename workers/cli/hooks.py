"""`vigil trigger create | list | delete | rotate-secret` and
`vigil webhook add | list | remove`."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    AllowUnknownAgentOpt,
    JsonOpt,
    StateOpt,
    emit,
    err,
    fail,
    nothing,
    out,
    run_db,
    vet_agents,
    warn,
    when,
)

if TYPE_CHECKING:
    # Imported by the commands when they run: `vigil --help` loads typer and rich only.
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.workers.hooks import NewTrigger, TriggerRow, WebhookRow
    from vigil.workers.settings import Settings

trigger_app = typer.Typer(
    help="Inbound HTTP triggers: a signed POST starts, messages or wakes an agent's session.",
    no_args_is_help=True,
)
webhook_app = typer.Typer(
    help="Outbound webhooks: an agent's events POSTed, signed, to a URL.", no_args_is_help=True
)


def _fail(exc: Exception) -> NoReturn:
    from vigil.workers.client import NotFound

    fail(str(exc), EXIT_NOT_FOUND if isinstance(exc, NotFound) else EXIT_USAGE)


def _trigger_dict(row: TriggerRow) -> dict[str, Any]:
    data = asdict(row)
    data.pop("secret")
    return data


def _show_secret(new: NewTrigger, as_json: bool) -> None:
    def human() -> None:
        out.print(Text(new.secret))
        err.print(
            f"trigger {new.trigger.name}: POST /v1/triggers/{new.trigger.name} signed with this "
            "secret (shown once, keep it now)"
        )

    emit({**_trigger_dict(new.trigger), "secret": new.secret}, as_json, human)


@trigger_app.command("create")
def create(
    name: str,
    agent: Annotated[str, typer.Option("--agent", help="The agent whose sessions it drives.")],
    action: Annotated[str, typer.Option("--action", help="start, message or wake.")] = "start",
    goal_template: Annotated[
        str | None,
        typer.Option("--goal-template", help="Goal of a started session: {field.path} filled."),
    ] = None,
    message_template: Annotated[
        str | None, typer.Option("--message-template", help="Message text: {field.path} filled.")
    ] = None,
    key_field: Annotated[
        str | None,
        typer.Option(
            "--key-field",
            help="Body field naming the session (one per key): a string or a number.",
        ),
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a trigger; its secret is printed once and stored sealed."""

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.client import VigilError
        from vigil.workers.hooks import TriggerService
        from vigil.workers.models import ConfigError

        try:
            new = await TriggerService(settings, db).create(
                name,
                agent_id=agent,
                action=action,
                goal_template=goal_template,
                message_template=message_template,
                key_field=key_field,
                by="cli",
            )
        except (VigilError, ConfigError) as exc:
            _fail(exc)
        _show_secret(new, as_json)

    run_db(go, state_dir)


@trigger_app.command("list")
def list_(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Triggers (never their secrets)."""

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.hooks import TriggerService

        rows = await TriggerService(settings, db).list_triggers()

        def human() -> None:
            if not rows:
                nothing("no triggers", "vigil trigger create NAME --agent A --goal-template ...")
                return
            table = Table("name", "agent", "action", "key field", "template", "created")
            for r in rows:
                table.add_row(
                    Text(r.name),
                    Text(r.agent_id),
                    Text(r.action),
                    Text(r.key_field or ""),
                    Text(_templates(r.goal_template, r.message_template)),
                    Text(when(r.created_at)),
                )
            out.print(table)

        emit([_trigger_dict(r) for r in rows], as_json, human)

    run_db(go, state_dir)


def _templates(goal: str | None, message: str | None) -> str:
    """A trigger's templates as its table shows them: both, when it has both (a message
    trigger with a key starts the key's session with its goal); each cut at 60."""
    shown = [
        f"{what}: {text[:60]}" for what, text in (("goal", goal), ("message", message)) if text
    ]
    return "; ".join(shown)


@trigger_app.command("delete")
def delete(name: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a trigger (its deliveries' record goes with it)."""

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.client import VigilError
        from vigil.workers.hooks import TriggerService

        try:
            await TriggerService(settings, db).delete(name)
        except VigilError as exc:
            _fail(exc)
        emit({"name": name, "deleted": True}, as_json, lambda: out.print(f"trigger {name} deleted"))

    run_db(go, state_dir)


@trigger_app.command("rotate-secret")
def rotate_secret(name: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Give a trigger a new secret (printed once); the old one stops working at once."""

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.client import VigilError
        from vigil.workers.hooks import TriggerService
        from vigil.workers.models import ConfigError

        try:
            new = await TriggerService(settings, db).rotate_secret(name)
        except (VigilError, ConfigError) as exc:
            _fail(exc)
        _show_secret(new, as_json)

    run_db(go, state_dir)


def _webhook_dict(row: WebhookRow) -> dict[str, Any]:
    return asdict(row)


@webhook_app.command("add")
def add(
    agent: Annotated[str, typer.Option("--agent", help="The agent whose events it gets.")],
    url: Annotated[str, typer.Option("--url", help="Where deliveries are POSTed.")],
    events: Annotated[
        list[str],
        typer.Option(
            "--events",
            help="approval_requested, human_asked, session_ended: comma-separated or repeated.",
        ),
    ],
    secret: Annotated[
        str,
        typer.Option("--secret", help="Signing secret: env:VAR or a stored credential's name."),
    ],
    allow_unknown: AllowUnknownAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a webhook to an agent (sessions starting from now on use it)."""
    # Every --events given counts (a repeated option used to keep only the last one).
    wanted = list(
        dict.fromkeys(e.strip() for given in events for e in given.split(",") if e.strip())
    )

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.client import VigilError
        from vigil.workers.hooks import WebhookService

        unknown = await vet_agents(
            db, [agent], allow_unknown=allow_unknown, then="; its sessions will use the webhook"
        )
        try:
            row = await WebhookService(db).add(agent, url, wanted, secret)
        except VigilError as exc:
            _fail(exc)
        warn(unknown)
        emit(
            _webhook_dict(row),
            as_json,
            lambda: out.print(Text(f"webhook {row.id}: {row.url} ({', '.join(row.events)})")),
        )

    run_db(go, state_dir)


@webhook_app.command("list")
def list_webhooks(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's.")] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Webhooks added with `vigil webhook add` (an agent file's are in its spec)."""

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.hooks import WebhookService

        rows = await WebhookService(db).list_webhooks(agent)

        def human() -> None:
            table = Table("id", "agent", "url", "events", "secret")
            for r in rows:
                table.add_row(
                    Text(str(r.id)),
                    Text(r.agent_id),
                    Text(r.url),
                    Text(",".join(r.events)),
                    Text(r.secret_ref),
                )
            out.print(table)

        emit([_webhook_dict(r) for r in rows], as_json, human)

    run_db(go, state_dir)


@webhook_app.command("remove")
def remove(webhook_id: int, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Remove a webhook: deliveries still being retried stop at their next attempt."""

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        from vigil.workers.client import VigilError
        from vigil.workers.hooks import WebhookService

        try:
            await WebhookService(db).remove(webhook_id)
        except VigilError as exc:
            _fail(exc)
        emit(
            {"id": webhook_id, "removed": True},
            as_json,
            lambda: out.print(f"webhook {webhook_id} removed"),
        )

    run_db(go, state_dir)
