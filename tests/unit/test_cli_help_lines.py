"""Every command's summary (the first paragraph of its help, which the command lists
show) is one line: a summary broken mid-sentence prints ragged in `vigil --help`."""

from __future__ import annotations

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
