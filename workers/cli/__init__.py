"""The `vigil` command line (typer + rich).

Readable output by default, ``--json`` for scripts, and one clear line (never a
traceback) for the errors a user can fix. Exit codes: 0 ok, 1 a check or run failed,
2 bad input or configuration, 3 a server could not be reached, 4 not found.

One module per command group; this one assembles the app and runs it. Modules import
only typer and rich at start; each command imports what it needs when it runs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from typing import NoReturn

import typer

from vigil.workers.cli import control, data, keyed, processes, sessions
from vigil.workers.cli.agents import agent_app
from vigil.workers.cli.api_tokens import api_command, token_app
from vigil.workers.cli.artifacts import artifact_app
from vigil.workers.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    JSON_ERRORS,
    argument_not_utf8,
    err,
    fail,
    load_settings,
    out,
    run_client,
    say_error,
)
from vigil.workers.cli.hooks import trigger_app, webhook_app
from vigil.workers.cli.memory import memory_app
from vigil.workers.cli.schedules import schedule_app
from vigil.workers.cli.secrets import secret_app
from vigil.workers.cli.stack import stack_app
from vigil.workers.cli.tools import tools_app

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "app",
    "fail",
    "load_settings",
    "main",
    "out",
    "run_client",
]

app = typer.Typer(
    name="vigil",
    help="Durable autonomous AI agents on Temporal, PostgreSQL/pgvector and an object store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"vigil {version('vigil')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            out.print("vigil (not installed: no version)")
        raise typer.Exit(0)


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", help="Print vigil's version and exit.", is_eager=True, callback=_version
    ),
) -> None:
    """Durable autonomous AI agents on Temporal, PostgreSQL/pgvector and an object store."""


app.add_typer(stack_app, name="stack")
app.add_typer(schedule_app, name="schedule")
app.add_typer(memory_app, name="memory")
app.add_typer(artifact_app, name="artifact")
app.add_typer(agent_app, name="agent")
app.add_typer(secret_app, name="secret")
app.add_typer(token_app, name="token")
app.add_typer(tools_app, name="tools")
app.add_typer(trigger_app, name="trigger")
app.add_typer(webhook_app, name="webhook")
app.command("api")(api_command)
processes.register(app)
sessions.register(app)
control.register(app)
keyed.register(app)
data.register(app)


def _reflowed(text: str) -> str:
    """A command's help with each paragraph's prose on one line: the source wraps it at
    its line length, and the help panel would print those breaks as they are (ragged at
    any other width). Indented lines and list items keep their own lines."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.split("\n"):
            starts_own = line[:1].isspace() or line.startswith(("- ", "* ", "\b"))
            if lines and not starts_own and not lines[-1][:1].isspace():
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _reflow_help(group: typer.Typer) -> None:
    for command in group.registered_commands:
        doc = command.help if command.help is not None else inspect.getdoc(command.callback)
        if doc:
            command.help = _reflowed(doc)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_help(sub.typer_instance)


_reflow_help(app)


def main() -> None:
    _exit(_run_app())


def _run_app() -> int:
    JSON_ERRORS["on"] = "--json" in sys.argv[1:]
    not_text = argument_not_utf8(sys.argv[1:])
    if not_text is not None:
        say_error(not_text, EXIT_USAGE)
        return EXIT_USAGE
    try:
        # Not standalone: a usage mistake (bad option value, unknown option, missing
        # argument) is caught below and told in one line instead of typer's panel.
        code = app(standalone_mode=False)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `vigil schedule`: help shown
            return EXIT_USAGE
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        code = int(getattr(exc, "exit_code", EXIT_USAGE))
        say_error(" ".join(message.split()), code)
        return code
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
