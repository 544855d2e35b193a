"""The README's table of agent file keys names every key the schema takes, and no key it
does not: a user read the schema's source to learn `[budget]`, `approve_when`, `[memory]`
and the rest, which the README never listed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from vigil.schema.agents import AgentSpec

README = Path(__file__).resolve().parents[2] / "README.md"


def _tables(annotation: object) -> tuple[type[BaseModel] | None, bool]:
    """The table type a field holds (a ``[model]``, or each of a list ``[[tools]]``), and
    whether it is a list of them."""
    if get_origin(annotation) is list:
        inner, _ = _tables(get_args(annotation)[0])
        return inner, inner is not None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for arg in get_args(annotation):  # X | None
        found, listed = _tables(arg)
        if found is not None:
            return found, listed
    return None, False


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for name, field in model.model_fields.items():
        table, listed = _tables(field.annotation)
        if table is None:
            found.add(prefix + name)
            continue
        if listed:  # a list of tables is a key of its own too (`tools = []`)
            found.add(prefix + name)
        found |= _keys(table, f"{prefix}{name}{'[]' if listed else ''}.")
    return found


def _listed() -> set[str]:
    text = README.read_text()
    start = text.index("Every key of an agent file")
    table = text[start : text.index("\n\n", text.index("| key |", start))]
    found: set[str] = set()
    for line in table.splitlines()[3:]:
        cell = line.split("|")[1]
        found |= set(re.findall(r"`([^`]+)`", cell))
    return found


def test_the_readmes_table_names_every_agent_file_key() -> None:
    schema, listed = _keys(AgentSpec), _listed()
    assert schema - listed == set(), "keys the README does not list"
    assert listed - schema == set(), "keys the README lists that the schema does not take"
