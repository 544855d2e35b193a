"""What every `vigil` command shares: exit codes, consoles, options, one-line failures, and
running a command with a connected client or a database session factory.

Heavy modules (the Temporal client, SQLAlchemy, the settings) are imported when a command
runs, not when the CLI starts: `vigil --help` and a control command start at once.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import os
import re
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import rich.markup
import typer
from rich.console import Console, ConsoleOptions, JustifyMethod, OverflowMethod, RenderableType
from rich.protocol import rich_cast
from rich.table import Column, Table
from rich.text import Text

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from rich.console import HighlighterType
    from rich.segment import Segment
    from rich.style import Style
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.schema.payloads import Budget
    from vigil.workers.client import VigilClient
    from vigil.workers.settings import Settings

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
LOCAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})
"""Failures of writing the command's own output, whatever server it read from."""
EXIT_NOT_FOUND = 4


class SafeConsole(Console):
    """A console that never writes a control character it is given: recorded text (a
    goal, a message, a reason, a tool's output) comes from untrusted sources, and an ESC in
    it would reach the operator's terminal as an escape sequence. Every string and ``Text``
    it shows, in a table or not, passes schema/printable.py's rule (the Markdown export's
    too): controls, C1 and bidi overrides become visible characters, newline and tab stay.
    JSON keeps its exact value, those characters written as ``\\uXXXX`` escapes. The
    console's own styles are escape sequences it adds afterwards: they work as before."""

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        # Before markup is read: vigil's tags hold no control character, data may.
        return super().render_str(
            visible(text),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=emoji,
            markup=markup,
            highlight=highlight,
            highlighter=highlighter,
        )

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        # A Text made elsewhere (a table cell, a spinner's label): one character for one,
        # so its styled spans stay in place.
        renderable = rich_cast(renderable)
        if isinstance(renderable, Text):
            plain = visible(renderable.plain)
            if plain != renderable.plain:
                shown = renderable.copy()
                shown.plain = plain
                renderable = shown
        return super().render(renderable, options)

    def print_json(
        self,
        json: str | None = None,
        *,
        data: Any = None,
        indent: int | str | None = 2,
        highlight: bool = True,
        skip_keys: bool = False,
        ensure_ascii: bool = False,
        check_circular: bool = True,
        allow_nan: bool = True,
        default: Callable[[Any], Any] | None = None,
        sort_keys: bool = False,
    ) -> None:
        from rich.highlighter import JSONHighlighter, NullHighlighter
        from rich.json import JSON

        from vigil.schema.printable import visible_json

        options: dict[str, Any] = {
            "indent": indent,
            "highlight": False,
            "skip_keys": skip_keys,
            "ensure_ascii": ensure_ascii,
            "check_circular": check_circular,
            "allow_nan": allow_nan,
            "default": default,
            "sort_keys": sort_keys,
        }
        if json is None:
            document = JSON.from_data(data, **options).text.plain
        else:
            document = JSON(json, **options).text.plain
        shown = (JSONHighlighter() if highlight else NullHighlighter())(visible_json(document))
        shown.no_wrap = True
        shown.overflow = None
        self.print(shown, soft_wrap=True)


def visible(text: str, keep: str = "\n\t") -> str:
    """``text`` as the consoles show it: schema/printable.py's rule (imported when first
    needed, so `vigil --help` loads nothing of vigil.schema)."""
    from vigil.schema import printable

    return printable.visible(text, keep)


escape = rich.markup.escape
"""Text for a markup string, its brackets escaped. The consoles (``SafeConsole``) apply
the rule to the whole string they are given: no need to here too."""


def one_line(text: str) -> str:
    """Text shown within one line: newlines and tabs shown visibly too, so a reason or a
    tool's arguments cannot start what looks like a line of its own."""
    return visible(text, keep="")


# Output to a pipe or a file is plain: no colour (rich's own rule off a terminal) and no
# wrapping at a guessed width, so a printed command stays on one line and tables keep
# their natural width.
_PIPE_WIDTH = 100_000
out = SafeConsole(
    highlight=False,
    soft_wrap=not sys.stdout.isatty(),
    width=None if sys.stdout.isatty() else _PIPE_WIDTH,
)
err = SafeConsole(stderr=True, highlight=False, soft_wrap=True)

# Errors as JSON on stderr when the command was given --json (set by the app's runner).
JSON_ERRORS = {"on": False}
ERROR_CODES = {1: "failed", 2: "bad_input", 3: "unreachable", 4: "not_found"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StateOpt = Annotated[
    str | None, typer.Option("--state-dir", help="Stack state folder (VIGIL_STATE_DIR).")
]
S3Opt = Annotated[
    bool,
    typer.Option("--with-minio", help="Also start MinIO (always with VIGIL_ARTIFACT_BACKEND=s3)."),
]
ToolsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tools",
        help="Module with @vigil.tool functions to load (repeatable; VIGIL_TOOL_MODULES).",
    ),
]
"""One option for every process that loads Python tools: the worker runs them, the API
describes them when it applies an agent (`vigil api`, the API `vigil stack up` starts)."""
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


def command_prefix() -> str:
    """How the commands in hints are written: ``uv run vigil`` when this CLI runs under
    ``uv run`` (uv names itself in ``UV`` for what it runs), else ``vigil``."""
    return "uv run vigil" if os.environ.get("UV") else "vigil"


@functools.cache
def _bare_commands() -> re.Pattern[str]:
    from vigil.workers.cli import app  # assembled by then: every command is registered

    names = sorted(typer.main.get_command(app).commands, key=len, reverse=True)  # type: ignore[attr-defined]
    # A command is quoted (`vigil stack up`), in brackets or after a colon; "let vigil
    # start its own" is prose.
    return re.compile(rf"(?:(?<=`)|(?<=\()|(?<=: )|^)vigil(?= (?:{'|'.join(names)})\b)")


def as_invoked(text: str) -> str:
    """``text`` with each command it names (```vigil stack up```, ``(vigil ...``,
    ``: vigil ...``) written as this CLI was started (``uv run vigil stack up`` under
    ``uv run``); other words stay as they are."""
    prefix = command_prefix()
    if prefix == "vigil" or "vigil " not in text:
        return text
    return _bare_commands().sub(prefix, text)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    say_error(message, code)
    raise typer.Exit(code)


def say_error(message: str, code: int) -> None:
    """One line on stderr: ``error: ...``, or with --json a JSON object with a stable code."""
    message = as_invoked(message)
    if JSON_ERRORS["on"]:
        body = {"error": {"code": ERROR_CODES.get(code, "failed"), "message": message}}
        err.print(json.dumps(body), markup=False, highlight=False, soft_wrap=True)
        return
    # Escaped: a message quoting user input ("[/x]", "[bold]") must not be read as markup.
    err.print(f"[bold red]error:[/] {escape(message)}")


def read_stdin() -> str:
    """All of standard input as text; bytes that are not UTF-8 are bad input (read strictly,
    not carried on as surrogates that fail later, deep in a serializer)."""
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"standard input is not UTF-8 text: {not_utf8(exc)}", EXIT_USAGE)


def stdin_text() -> str:
    """A text argument given as `-`: standard input, less the shell's trailing newline."""
    text_ = read_stdin()
    # One trailing newline is the shell's (`echo`), not the message's.
    text_ = text_[:-1] if text_.endswith("\n") else text_
    if not text_.strip():
        fail("no text on standard input (TEXT `-` reads the message from it)", EXIT_USAGE)
    return text_


def not_utf8(exc: UnicodeError) -> str:
    """Where text stopped being UTF-8, for a person: the byte and its position."""
    obj = getattr(exc, "object", b"")
    start = getattr(exc, "start", 0)
    bad = obj[start : start + 1]
    if isinstance(bad, str):  # a surrogate standing in for an undecodable byte
        code = ord(bad) if bad else 0
        return f"byte 0x{code & 0xFF:02x} at position {start}"
    return f"byte 0x{bad.hex() or '??'} at position {start}"


def argument_not_utf8(args: Sequence[str]) -> str | None:
    """The first command-line argument that is not UTF-8 text, said for a person, or None.

    Python hands such bytes on as lone surrogates, which pass every check and then fail
    when the text is sent or stored."""
    for n, arg in enumerate(args, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return f"argument {n} ({short(shown, 60)!r}) is not UTF-8 text: {not_utf8(exc)}"
    return None


def when(value: datetime | None) -> str:
    """Every time a person reads, in one format: UTC, to the second."""
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime(TIME_FORMAT)


def short(text: str, width: int = 80) -> str:
    """Text shortened at a word (never mid-word), on one line."""
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" …")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, whole: int = 1) -> Table:
    """A table whose first ``whole`` columns (ids, the things people copy) are never cut
    or wrapped; the other columns wrap at words."""
    cells = [plain(*row) for row in rows]
    columns = []
    for i, header in enumerate(headers):
        if i < whole:
            widest = max([len(header), *(c[i].cell_len for c in cells)])
            columns.append(Column(header, no_wrap=True, min_width=widest))
        else:
            columns.append(Column(header, overflow="fold"))
    result = Table(*columns)
    for row_cells in cells:
        result.add_row(*row_cells)
    return result


def highlighted(snippet: str) -> Text:
    """A search snippet with its ``[[match]]`` markers shown in bold, not as brackets."""
    text = Text()
    pos = 0
    snippet = visible(snippet)
    for m in re.finditer(r"\[\[(.+?)\]\]", snippet, flags=re.S):
        text.append(snippet[pos : m.start()])
        text.append(m.group(1), style="bold")
        pos = m.end()
    text.append(snippet[pos:])
    return text


def nothing(message: str, hint: str | None = None) -> None:
    """An empty result said so (on stdout, where the table would be), with why if known."""
    out.print(Text(as_invoked(message + (f" ({hint})" if hint else ""))))


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
    arguments) must not be read as rich markup, which would hide or choke on brackets.
    Controls are shown visibly here already, so a cell is measured as it is shown."""
    return [Text(visible(str(cell))) for cell in cells]


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


def json_default(value: Any) -> Any:
    """JSON for what ``json`` cannot write: times in ISO 8601 (as the export and the API
    give them), anything else as its text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def emit(value: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        out.print_json(json.dumps(value, default=json_default))
    else:
        human()


def run_client(fn: Callable[[VigilClient], Awaitable[T]], state_dir: str | None = None) -> T:
    """Run ``fn`` with a connected client; user-fixable errors become one line + exit code."""
    from pydantic import ValidationError

    from vigil.workers.client import VigilClient, VigilError
    from vigil.workers.temporal import CORE_LOGGER

    settings = load_settings(state_dir)
    # The SDK core's own lines (a call it retried while Temporal restarted) are not the
    # command's to print: it says what came of the call. Errors are still shown.
    logging.getLogger(CORE_LOGGER).setLevel(logging.ERROR)

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
        fail(f"bad argument: {first_error(exc)}", EXIT_USAGE)
    except BrokenPipeError:
        raise  # the reader went away (`vigil export ... | head`): main() exits quietly
    except OSError as exc:
        if exc.filename is not None:  # a local file (e.g. --output), not a server
            fail(f"{exc.strerror or exc}: {exc.filename}", EXIT_FAILED)
        if exc.errno in LOCAL_WRITE_ERRNOS:  # the output (a full disk), not a server
            fail(f"cannot write the output: {exc.strerror or exc}", EXIT_FAILED)
        fail(unreachable(settings, exc), EXIT_UNREACHABLE)
    except Exception as exc:
        if not _from_the_database(exc):
            raise
        database_refused(exc)


def _from_the_database(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's (through SQLAlchemy or the driver), asked without
    importing either: a command that never loaded them cannot have their errors."""
    kinds = [
        getattr(sys.modules.get(module), name, None)
        for module, name in (("sqlalchemy.exc", "DBAPIError"), ("asyncpg", "PostgresError"))
    ]
    return any(isinstance(kind, type) and isinstance(exc, kind) for kind in kinds)


def unreachable(settings: Settings, exc: OSError) -> str:
    """One line for a server that did not answer: which of the stack's parts it is (by the
    address it refused on), where, and how to start it."""
    from urllib.parse import urlsplit

    from vigil.activities.failures import address_of
    from vigil.workers.settings import POSTGRES_PORT

    at = address_of(exc)
    why = os.strerror(exc.errno) if exc.errno else (exc.strerror or "no answer")
    ends = settings.endpoints()
    if at is None and isinstance(exc, TimeoutError) and _in_the_driver(exc):
        # The driver's connect timed out (a server that took the connection and never
        # answered): it names no address, but it is PostgreSQL's.
        database = urlsplit(ends.database_url or "")
        if database.hostname:
            at = database.hostname, database.port or POSTGRES_PORT
            why = f"no answer within {settings.db_connect_seconds:g} s"
    if at is None:
        return f"cannot reach a server: {exc or type(exc).__name__}"
    host, port = at
    parts = [
        ("PostgreSQL", "DATABASE_URL", ends.database_url, POSTGRES_PORT),
        ("the object store", "VIGIL_S3_ENDPOINT", ends.s3_endpoint, None),
        ("Temporal", "TEMPORAL_ADDRESS", f"//{ends.temporal_address}", None),
    ]
    for part, knob, url, default_port in parts:
        if url is None:
            continue
        where = urlsplit(url if "//" in url else f"//{url}")
        try:
            same = (where.port or default_port) == port
        except ValueError:  # a URL without a valid port names no part here
            same = False
        if same:
            return (
                f"cannot reach {part} at {host}:{port} ({why}); "
                f"start it with `vigil stack up` (or check {knob})"
            )
    return f"cannot reach a server at {host}:{port} ({why})"


def _in_the_driver(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside PostgreSQL's driver."""
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}asyncpg{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def run_db(
    fn: Callable[[Settings, async_sessionmaker[DbSession]], Awaitable[T]],
    state_dir: str | None,
) -> T:
    """Run ``fn`` with a database session factory; user-fixable errors become one line."""
    from asyncpg import PostgresError
    from sqlalchemy.exc import DBAPIError

    from vigil.workers.agents import AgentError, InvalidAgentFiles
    from vigil.workers.db import make_engine, make_sessionmaker
    from vigil.workers.models import ConfigError

    settings = load_settings(state_dir)
    url = settings.endpoints().database_url
    if url is None:
        fail(settings.no_database(), EXIT_UNREACHABLE)

    async def go() -> T:
        engine = make_engine(url, pool_size=2, connect_timeout=settings.db_connect_seconds)
        try:
            return await fn(settings, make_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except InvalidAgentFiles as exc:
        if JSON_ERRORS["on"]:
            fail(str(exc), exc.exit_code)
        for line in str(exc).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}")
        raise typer.Exit(exc.exit_code) from None
    except AgentError as exc:
        fail(str(exc), exc.exit_code)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except (DBAPIError, PostgresError) as exc:
        database_refused(exc)
    except OSError as exc:
        fail(unreachable(settings, exc), EXIT_UNREACHABLE)


def database_refused(exc: BaseException, prefix: str = "") -> NoReturn:
    """PostgreSQL answered and refused, or went: one line (after ``prefix``). Refused to
    connect (a wrong password, no such database, too many connections, starting up) or
    gone is the unreachable exit; anything else failed."""
    from sqlalchemy.exc import DBAPIError

    from vigil.activities.failures import describe

    inner: BaseException | None = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        inner = exc.orig.__cause__ or exc.orig
    state = str(getattr(inner, "sqlstate", "") or "")
    if not state:  # no answer of PostgreSQL's: the connection went (or never came)
        fail(f"{prefix}lost PostgreSQL: {describe(exc)}", EXIT_UNREACHABLE)
    fail(
        f"{prefix}PostgreSQL refused: {describe(exc)}",
        # It would not take the connection (login, database, too many, starting up).
        EXIT_UNREACHABLE if state[:2] in ("08", "28", "3D", "53", "57") else EXIT_FAILED,
    )


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
        # (A message may end in "at": "Unterminated string starting at".)
        said = exc.msg.removesuffix(" at")
        fail(f"{what} is not valid JSON: {said} at character {exc.pos + 1}", EXIT_USAGE)
    except RecursionError:
        fail(f"{what} is nested too deeply", EXIT_USAGE)
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


# --- time inputs (parsed in one place, workers/inputs.py, shared with the API) ----------


def _duration(raw: str | None, what: str) -> timedelta | None:
    from vigil.workers import inputs
    from vigil.workers.client import VigilError

    try:
        return inputs.parse_duration(raw, what)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)


def checked_session_id(raw: str | None) -> str | None:
    """``--id`` of a new session, checked as the API checks it (exit 2 when refused)."""
    from vigil.workers import inputs
    from vigil.workers.client import VigilError

    try:
        return inputs.check_session_id(raw)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)


def _parse_since(raw: str | None, what: str = "--since") -> datetime | None:
    from vigil.workers import inputs
    from vigil.workers.client import VigilError

    try:
        return inputs.parse_since(raw, what)
    except VigilError as exc:
        fail(str(exc), EXIT_USAGE)


AllowUnknownAgentOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unknown-agent",
        help="Go on even for an agent that reads as a known one but is not it "
        "(another case, letters of another script).",
    ),
]


async def vet_agents(
    db: async_sessionmaker[DbSession],
    agents: list[str],
    *,
    allow_unknown: bool,
    then: str = "",
) -> list[str]:
    """Agents the record does not know (no definition, no session): one that reads as a
    known one (``Ops`` for ``ops``, a Cyrillic letter for a Latin one) is refused (exit 2)
    unless ``allow_unknown``; for any other, a warning to print once the command has done
    its work (``then`` adds what follows for the agent). An id matches exactly, so a typo
    would otherwise name an agent of its own."""
    from vigil.workers.tokens import unknown_agents

    try:
        unknown = await unknown_agents(db, agents)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    for agent in unknown:
        if agent.like is not None and not allow_unknown:
            fail(f"{agent.describe()} (pass --allow-unknown-agent to go on)", EXIT_USAGE)
    return [f"warning: {agent.describe()}{then}" for agent in unknown]


def warn(lines: Iterable[str]) -> None:
    for line in lines:
        err.print(Text(line))
