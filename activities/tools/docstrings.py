"""What a Python tool's docstring and type hints tell the model: descriptions, a clean schema."""

from __future__ import annotations

import inspect
import re
from typing import Any

_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:\s*$")
_GOOGLE_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph, {parameter: description}) of a docstring with a Google-style
    ``Args:`` section or Sphinx ``:param x:`` lines."""
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _ARGS_HEADER.match(line) or line.startswith(":"):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    current: str | None = None
    entry_indent: int | None = None
    in_args = False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if _ARGS_HEADER.match(line):
            in_args, current, entry_indent = True, None, None
            continue
        sphinx = _SPHINX_ARG.match(stripped)
        if sphinx:
            in_args, current = False, sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif not stripped or (indent == 0 and not in_args) or stripped.startswith(":"):
            current = None if not stripped or stripped.startswith(":") else current
        elif in_args and indent == 0:
            in_args, current = False, None  # the next section
        elif in_args and (entry_indent is None or indent <= entry_indent):
            match = _GOOGLE_ARG.match(stripped)
            entry_indent = indent
            current = match.group(1) if match else None
            if match:
                params[current or ""] = match.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {stripped}".strip()
    return " ".join(summary), {k: v for k, v in params.items() if k and v}


def schema_without_titles(schema: Any) -> Any:
    """pydantic's generated titles repeat the names; a model reads the schema better without."""
    if isinstance(schema, list):
        return [schema_without_titles(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions", "patternProperties"):
            out[key] = {k: schema_without_titles(v) for k, v in value.items()}
        else:
            out[key] = schema_without_titles(value)
    return out
