"""`vigil api` (the HTTP API server) and `vigil token create | list | revoke`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    AllowUnknownAgentOpt,
    JsonOpt,
    StateOpt,
    ToolsOpt,
    emit,
    err,
    fail,
    load_settings,
    nothing,
    out,
    run_db,
    vet_agents,
    warn,
    when,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.workers.settings import Settings

token_app = typer.Typer(
    help="Personal access tokens for the HTTP API (stored hashed).", no_args_is_help=True
)


def api_command(
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address (VIGIL_API_HOST; loopback).")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (VIGIL_API_PORT).")] = None,
    state_dir: StateOpt = None,
    tools: ToolsOpt = None,
) -> None:
    """Serve the HTTP API (docs at /v1/docs, OpenAPI at /v1/openapi.json)."""
    import uvicorn

    from vigil.workers.api.app import create_app
    from vigil.workers.logs import configure
    from vigil.workers.tool_wiring import with_worker_flags

    # The tools are described when an agent is applied (POST /agents), as by the worker.
    settings = with_worker_flags(load_settings(state_dir), tools or [], None, False)
    updates: dict[str, object] = {}
    if host is not None:
        updates["api_host"] = host
    if port is not None:
        updates["api_port"] = port
    settings = settings.model_copy(update=updates)
    configure(settings.log_format, settings.log_level)
    err.print(f"vigil API on http://{settings.api_host}:{settings.api_port}/v1 (docs: /v1/docs)")
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )


def _token_dict(info: object) -> dict[str, object]:
    return {k: v for k, v in asdict(info).items()}  # type: ignore[call-overload]


@token_app.command("create")
def create(
    owner: Annotated[str, typer.Option("--owner", help="Who acts with it (recorded as actor).")],
    scope: Annotated[str, typer.Option("--scope", help="read, control or admin.")] = "read",
    agents: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            "-a",
            "--agents",
            help="An agent it covers (repeatable, or comma-separated); all when none.",
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label for listings.")] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", help="It stops working after this long (90d, 12h); never by default."
        ),
    ] = None,
    allow_unknown: AllowUnknownAgentOpt = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; the whole token is printed once and never stored. An agent id is
    matched exactly: one that reads as a known agent without being it is refused, one
    not known at all is taken (for an agent to come) with a warning."""
    from datetime import UTC, datetime

    from vigil.workers.client import VigilError
    from vigil.workers.inputs import parse_duration
    from vigil.workers.tokens import Scope, TokenService

    try:
        parsed = Scope.parse(scope)
        lasts = parse_duration(expires, "--expires", allow_zero=False)
        expires_at = datetime.now(UTC) + lasts if lasts is not None else None
    except (ValueError, VigilError, OverflowError) as exc:
        fail(str(exc), EXIT_USAGE)
    agent_list = [a.strip() for given in agents or () for a in given.split(",")]
    if any(not agent for agent in agent_list):
        # Dropped, they left no agent named, and a token for every agent was made: what a
        # script's `--agent "$AGENT"` with the variable unset asked for.
        fail(
            "--agent was given an empty agent id; leave --agent out for a token that covers "
            "every agent",
            EXIT_USAGE,
        )

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        service = TokenService(db)
        unknown = await vet_agents(
            db,
            agent_list,
            allow_unknown=allow_unknown,
            then="; the token covers it once it is started or defined",
        )
        try:
            new = await service.create(
                owner,
                scope=parsed,
                name=name,
                agents=agent_list if agents else None,
                expires_at=expires_at,
            )
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
        warn(unknown)

        def human() -> None:
            out.print(Text(new.token))
            err.print(
                f"token {new.info.id} ({new.info.scope}) for {new.info.owner}: "
                "shown once, keep it now"
            )

        emit({**_token_dict(new.info), "token": new.token}, as_json, human)

    run_db(go, state_dir)


@token_app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokens (never their secrets)."""
    from vigil.workers.tokens import TokenService

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        rows = await TokenService(db).list(include_revoked=all_)

        def human() -> None:
            if not rows:
                nothing(
                    "no tokens",
                    "create one: vigil token create --owner NAME --scope read",
                )
                return
            table = Table(
                "id", "owner", "scope", "agents", "name", "created", "expires", "last used",
                "state",
            )  # fmt: skip
            now = datetime.now(UTC)
            for r in rows:
                expired = r.expires_at is not None and r.expires_at <= now
                state = "revoked" if r.revoked_at else "expired" if expired else "live"
                table.add_row(
                    Text(r.id),
                    Text(r.owner),
                    Text(r.scope),
                    Text(",".join(r.agents) if r.agents else "all"),
                    Text(r.name),
                    Text(when(r.created_at)),
                    Text(when(r.expires_at) if r.expires_at else "never"),
                    Text(when(r.last_used_at) if r.last_used_at else "never"),
                    Text(state),
                )
            out.print(table)

        emit([_token_dict(r) for r in rows], as_json, human)

    run_db(go, state_dir)


@token_app.command("revoke")
def revoke(token_id: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a token at once (its next request is refused)."""
    from vigil.workers.tokens import TokenService

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        try:
            changed = await TokenService(db).revoke(token_id)
        except LookupError as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        emit(
            {"id": token_id, "revoked": True, "was_live": changed},
            as_json,
            lambda: out.print(
                Text(f"token {token_id} revoked" + ("" if changed else " (it already was)"))
            ),
        )

    run_db(go, state_dir)
