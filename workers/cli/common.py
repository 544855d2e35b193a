"""What every `vigil` command shares: exit codes, consoles, options, one-line failures, and
running a command with a connected client or a database session factory.

Heavy modules (the Temporal client, SQLAlchemy, the settings) are imported when a command
runs, not when the CLI starts: `vigil --help` and a control command start at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.schema.payloads import Budget
    from vigil.workers.client import VigilClient
    from vigil.workers.settings import Settings

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4

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


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # Escaped: a message quoting user input ("[/x]", "[bold]") must not be read as markup.
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def load_settings(state_dir: str | None = None, with_minio: bool = False) -> Settings:
    from vigil.workers.settings import Settings

    overrides: dict[str, object] = {}
    if state_dir:
        overrides["state_dir"] = state_dir
    if with_minio:
        overrides["with_minio"] = True
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except Exception as exc:
        fail(f"bad configuration: {exc}".splitlines()[0], EXIT_USAGE)


def plain(*cells: object) -> list[Text]:
    """Table cells shown as they are: data (goals, snippets with [[matches]], tool
    arguments) must not be read as rich markup, which would hide or choke on brackets."""
    return [Text(str(cell)) for cell in cells]


def say(message: str) -> None:
    err.print(f"[dim]·[/] {message}")


def by_default() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def user_name() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return None


def emit(value: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        out.print_json(json.dumps(value, default=str))
    else:
        human()


def run_client(fn: Callable[[VigilClient], Awaitable[T]], state_dir: str | None = None) -> T:
    """Run ``fn`` with a connected client; user-fixable errors become one line + exit code."""
    from pydantic import ValidationError

    from vigil.workers.client import VigilClient, VigilError

    settings = load_settings(state_dir)

    async def go() -> T:
        client = await VigilClient.connect(settings)
        try:
            return await fn(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except VigilError as exc:
        fail(str(exc), exc.exit_code)
    except ValidationError as exc:
        fail(f"bad argument: {first_error(exc)}", EXIT_USAGE)
    except BrokenPipeError:
        raise  # the reader went away (`vigil export ... | head`): main() exits quietly
    except OSError as exc:
        if exc.filename is not None:  # a local file (e.g. --output), not a server
            fail(f"{exc.strerror or exc}: {exc.filename}", EXIT_FAILED)
        fail(f"cannot reach a server: {exc}", EXIT_UNREACHABLE)


def run_db(
    fn: Callable[[Settings, async_sessionmaker[DbSession]], Awaitable[T]],
    state_dir: str | None,
) -> T:
    """Run ``fn`` with a database session factory; user-fixable errors become one line."""
    from vigil.workers.agents import AgentError, InvalidAgentFiles
    from vigil.workers.db import make_engine, make_sessionmaker
    from vigil.workers.models import ConfigError

    settings = load_settings(state_dir)
    url = settings.endpoints().database_url
    if url is None:
        fail("no database: set DATABASE_URL or run `vigil stack up`", EXIT_UNREACHABLE)

    async def go() -> T:
        engine = make_engine(url, pool_size=2)
        try:
            return await fn(settings, make_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except InvalidAgentFiles as exc:
        for line in str(exc).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}")
        raise typer.Exit(exc.exit_code) from None
    except AgentError as exc:
        fail(str(exc), exc.exit_code)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot reach PostgreSQL: {exc}", EXIT_UNREACHABLE)


def check(value: BaseModel) -> str:
    """Refuse oversized input before connecting to anything (the session's own limits);
    returns the ``by`` of the payload."""
    from vigil.workers.client import VigilError, refuse_oversized

    try:
        refuse_oversized(value)
    except VigilError as exc:
        fail(str(exc), exc.exit_code)
    return str(getattr(value, "by", ""))


def first_error(exc: ValidationError) -> str:
    err0 = exc.errors()[0]
    where = ".".join(str(p) for p in err0.get("loc", ()))
    return f"{where}: {err0.get('msg')}" if where else str(err0.get("msg"))


def json_arg(raw: str | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at char {exc.pos}", EXIT_USAGE)
    if not isinstance(value, dict):
        fail(f"{what} must be a JSON object", EXIT_USAGE)
    return value


def given_budget(**limits: Any) -> Budget:
    """A Budget holding only the limits given (so only those override a definition's)."""
    from vigil.schema.payloads import Budget

    return Budget(**{k: v for k, v in limits.items() if v is not None})


def csv(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


# --- time inputs (kept as they were; they move to a shared inputs module) ----------------


def _duration(raw: str | None, what: str) -> timedelta | None:
    if raw is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        if raw[-1:] in units:
            return timedelta(seconds=float(raw[:-1]) * units[raw[-1]])
        return timedelta(seconds=float(raw))
    except ValueError:
        fail(f"bad {what} {raw!r}: use seconds or a duration like 90s, 15m, 2h, 1d", EXIT_USAGE)


def _parse_since(raw: str | None, what: str = "--since") -> datetime | None:
    if raw is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if raw[-1:] in units and raw[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(raw[:-1]) * units[raw[-1]])
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        fail(f"bad {what} {raw!r}: use an ISO time or a duration like 2h, 3d", EXIT_USAGE)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
