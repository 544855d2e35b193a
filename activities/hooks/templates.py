"""Templates that map a trigger's JSON body into a goal or a message.

A template is text with ``{field.path}`` placeholders: each names a path into the body,
dot-separated object keys (or list indexes, ``{items.0.name}``). A string is put in as
it is; a number, boolean, null, object or list as its JSON. ``{{`` and ``}}`` are a
literal brace. A placeholder whose path the body does not have is an error that names
it (the API answers 422), never an empty string.

    goal_template = "Triage issue #{issue.number}: {issue.title}"
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PATH = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
MAX_TEMPLATE = 20_000


class TemplateError(ValueError):
    """The template is malformed, or the body lacks a field it names."""


def placeholders(template: str) -> list[str]:
    """The paths a template names; TemplateError when it is malformed."""
    if len(template) > MAX_TEMPLATE:
        raise TemplateError(f"a template holds at most {MAX_TEMPLATE} characters")
    paths: list[str] = []
    for m in _TOKEN.finditer(template):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        path = m.group(1)
        if path is None:
            raise TemplateError(f"a lone {token!r} at {m.start()}: write {token * 2} for a brace")
        if not _PATH.fullmatch(path):
            raise TemplateError(f"bad placeholder {{{path[:60]}}}: use {{field.path}}")
        paths.append(path)
    return paths


def lookup(body: Any, path: str) -> Any:
    """The value at ``path`` in ``body``; TemplateError naming the path when absent."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"the body has no field {path!r}")
    return value


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def render(template: str, body: Any) -> str:
    """``template`` with every placeholder filled from ``body``."""
    placeholders(template)
    missing: list[str] = []

    def fill(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        path = m.group(1)
        try:
            return as_text(lookup(body, path))
        except TemplateError:
            missing.append(path)
            return ""

    text = _TOKEN.sub(fill, template)
    if missing:
        names = ", ".join(repr(p) for p in missing[:10])
        raise TemplateError(f"the body has no field {names}")
    return text
