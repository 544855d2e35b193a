"""`vigil agent ...`: agent definitions from files into PostgreSQL, and back out.

    vigil agent apply agents/            # every .toml/.yaml under it; unchanged ones stay
    vigil agent apply agents/ --tools mypkg.tools --refresh   # Python tools; MCP re-listed
    vigil agent list | show NAME [--version N] | history NAME | diff NAME [V1 V2]

Only PostgreSQL is needed (not Temporal). ``--json`` everywhere; a bad file is reported as
``FILE:LINE: FIELD: problem`` lines and exit code 2.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from vigil.workers.cli.common import (
    JsonOpt,
    StateOpt,
    emit,
    err,
    out,
    run_db,
    user_name,
    when,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.workers.agents import AgentDiff, AgentVersionInfo
    from vigil.workers.settings import Settings

agent_app = typer.Typer(help="Agent definitions: files applied as versions.", no_args_is_help=True)


def _version_dict(v: AgentVersionInfo) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "content_hash": v.content_hash,
        "created_at": v.created_at.isoformat(),
        "created_by": v.created_by,
        "source": v.source,
        "spec": v.spec.model_dump(mode="json"),
        "tools": [t.model_dump(mode="json") for t in v.tools],
    }


@agent_app.command("apply")
def apply(
    paths: Annotated[list[Path], typer.Argument(help="Agent files or folders of them.")],
    by: Annotated[str, typer.Option("--by", help="Who applies (recorded; you by default).")] = "",
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            help="Module with the @vigil.tool functions agents name (repeatable; "
            "VIGIL_TOOL_MODULES), as the worker loads them.",
        ),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="List the tools of unchanged agents again (their MCP servers)."
        ),
    ] = False,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate every file, then store each changed definition as a new version.

    The MCP servers a definition names are started once to list their tools."""

    from vigil.workers.agents import apply_files

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        applied = await apply_files(
            settings, db, paths, tools=tools or [], by=by or user_name(), refresh=refresh
        )

        def human() -> None:
            for a in applied:
                what = f"version {a.version} created" if a.created else f"unchanged (v{a.version})"
                if a.tools_changed:
                    what += " (its tools changed; the file did not)"
                out.print(
                    Text(f"{a.name}: {what}  {a.content_hash[:12]}  {a.path}"),
                )
                for warning in a.warnings:
                    err.print(Text(f"warning: {a.name}: {warning}", style="yellow"))

        emit([asdict(a) for a in applied], as_json, human)

    run_db(go, state_dir)


@agent_app.command("list")
def list_(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Every defined agent with its newest version."""
    from vigil.workers.agents import AgentService

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        rows = await AgentService(db).list_agents()

        def human() -> None:
            table = Table("agent", "newest", "versions", "hash", "updated", "description")
            for r in rows:
                table.add_row(
                    *(
                        Text(str(c))
                        for c in (
                            r.name,
                            f"v{r.newest}",
                            r.versions,
                            r.content_hash[:12],
                            when(r.updated_at),
                            r.description[:60],
                        )
                    )
                )
            out.print(table)

        emit([asdict(r) for r in rows], as_json, human)

    run_db(go, state_dir)


@agent_app.command("show")
def show(
    name: str,
    version: Annotated[
        int | None,
        typer.Option("--version", "-v", min=1, help="This version (the newest otherwise)."),
    ] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One version (the newest by default): the spec and its tool catalog."""
    from vigil.workers.agents import AgentService

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        v = await AgentService(db).show(name, version)

        def human() -> None:
            out.print(Text(f"{v.name} v{v.version}  {v.content_hash}"))
            out.print(Text(f"applied {when(v.created_at)} from {v.source or '-'}"))
            out.print(Text(json.dumps(v.spec.model_dump(mode="json"), indent=2)))
            table = Table("tool", "kind", "effects", "approval", "rules", "queue")
            for t in v.tools:
                table.add_row(
                    *(
                        Text(str(c))
                        for c in (
                            t.name,
                            t.kind,
                            t.effects,
                            t.approval,
                            len(t.approve_when),
                            t.task_queue or "-",
                        )
                    )
                )
            out.print(table)

        emit(_version_dict(v), as_json, human)

    run_db(go, state_dir)


@agent_app.command("history")
def history(name: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Every version of an agent, oldest first."""
    from vigil.workers.agents import AgentService

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        versions = await AgentService(db).history(name)

        def human() -> None:
            table = Table("version", "hash", "applied", "by", "source")
            for v in versions:
                table.add_row(
                    *(
                        Text(str(c))
                        for c in (
                            f"v{v.version}",
                            v.content_hash[:12],
                            when(v.created_at),
                            v.created_by or "-",
                            v.source or "-",
                        )
                    )
                )
            out.print(table)

        emit(
            [
                {k: d[k] for k in d if k not in ("spec", "tools")}
                for d in map(_version_dict, versions)
            ],
            as_json,
            human,
        )

    run_db(go, state_dir)


@agent_app.command("diff")
def diff(
    name: str,
    old: Annotated[int | None, typer.Argument(help="From this version.")] = None,
    new: Annotated[int | None, typer.Argument(help="To this version (the newest).")] = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What changed between two versions (the last change by default)."""
    from vigil.workers.agents import AgentService

    async def go(_: Settings, db: async_sessionmaker[DbSession]) -> None:
        d: AgentDiff = await AgentService(db).diff(name, old, new)

        def human() -> None:
            if d.old == d.new == 1:
                out.print(Text(f"{d.name} has one version (v1): nothing to compare yet"))
            elif not d.lines:
                out.print(Text(f"{d.name}: v{d.old} and v{d.new} are the same"))
            for line in d.lines:
                style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
                out.print(Text(line, style=style))

        emit(asdict(d), as_json, human)

    run_db(go, state_dir)
