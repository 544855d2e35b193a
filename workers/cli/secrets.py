"""`vigil secret set NAME | list | delete NAME`: credentials stored encrypted in PostgreSQL.

A value is read from standard input (piped) or a prompt that does not echo; it is never
printed, logged or recorded. Model connections and MCP servers name credentials; workers
resolve them inside activities.
"""

from __future__ import annotations

import getpass
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from vigil.workers.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    JsonOpt,
    StateOpt,
    emit,
    fail,
    out,
    read_stdin,
    run_db,
    when,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.workers.settings import Settings

secret_app = typer.Typer(
    help="Credentials, stored encrypted (values never shown).", no_args_is_help=True
)


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (not shown): ")
    else:
        value = read_stdin()
        # One trailing newline is the shell's (`echo`), not the secret's.
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        fail("no value given (pipe it on standard input, or type it at the prompt)", EXIT_USAGE)
    return value


@secret_app.command("set")
def set_(name: str, state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Store a credential (value from standard input or a prompt; never echoed)."""
    value = _read_value(name)

    from vigil.workers.credentials import CredentialService

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        try:
            created = await CredentialService(settings, db).set(name, value)
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
        emit(
            {"name": name, "created": created},
            as_json,
            lambda: out.print(Text(f"credential {name} {'stored' if created else 'replaced'}")),
        )

    run_db(go, state_dir)


@secret_app.command("list")
def list_(state_dir: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Names of stored credentials (never their values)."""

    from vigil.workers.credentials import CredentialService

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        rows = await CredentialService(settings, db).list_credentials()

        def human() -> None:
            table = Table("name", "key id", "updated")
            for r in rows:
                table.add_row(Text(r.name), Text(r.key_id), Text(when(r.updated_at)))
            out.print(table)

        emit([asdict(r) for r in rows], as_json, human)

    run_db(go, state_dir)


@secret_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument()], state_dir: StateOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete a stored credential."""

    from vigil.workers.credentials import CredentialService, NoSuchCredential

    async def go(settings: Settings, db: async_sessionmaker[DbSession]) -> None:
        try:
            await CredentialService(settings, db).delete(name)
        except NoSuchCredential as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        emit(
            {"name": name, "deleted": True},
            as_json,
            lambda: out.print(Text(f"credential {name} deleted")),
        )

    run_db(go, state_dir)
