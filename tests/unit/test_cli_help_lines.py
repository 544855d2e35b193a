"""Every command's summary (the first paragraph of its help, which the command lists
show) is one line: a summary broken mid-sentence prints ragged in `vigil --help`."""

from __future__ import annotations

import itertools
from typing import Any

import typer.main

from vigil.workers.cli import app


def _commands(command: Any, path: str) -> list[tuple[str, str]]:
    found = [(path, command.help or "")]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_summary_is_one_line() -> None:
    commands = _commands(typer.main.get_command(app), "vigil")
    assert len(commands) > 40  # the whole tree was walked
    ragged = [
        (path, help_text.split("\n\n")[0])
        for path, help_text in commands
        if "\n" in help_text.split("\n\n")[0].strip()
    ]
    assert ragged == []


def test_every_paragraph_of_a_help_is_one_line_of_prose() -> None:
    """The source wraps a command's help at its line length; shown as written, the help
    panel breaks mid-sentence at any other width (`vigil message --help` in 80 columns
    ended lines after 'the' and 'starts the'). Indented lines and list items keep
    their own lines."""
    ragged = []
    for path, help_text in _commands(typer.main.get_command(app), "vigil"):
        for paragraph in help_text.split("\n\n"):
            lines = paragraph.split("\n")
            for before, line in itertools.pairwise(lines):
                own = line[:1].isspace() or line.startswith(("- ", "* ", "\b"))
                if not own and not before[:1].isspace():
                    ragged.append((path, line))
    assert ragged == []


def _options_without_help(command: Any, path: str) -> list[tuple[str, list[str]]]:
    found = [
        (path, list(p.opts))
        for p in getattr(command, "params", [])
        # By its kind, not its class: typer's options need not be click's own class.
        if p.param_type_name == "option" and not p.hidden and not (p.help or "").strip()
    ]
    for name, sub in getattr(command, "commands", {}).items():
        found += _options_without_help(sub, f"{path} {name}")
    return found


def test_every_option_says_what_it_does() -> None:
    """`list --agent/--status`, `schedule create --max-steps/--approve-tools` and `memory
    add --subject/--importance` showed no words in `--help`."""
    root = typer.main.get_command(app)
    assert len(_commands(root, "vigil")) > 40  # the whole tree was walked
    assert _options_without_help(root, "vigil") == []
