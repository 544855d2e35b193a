"""The tool catalog of an agent version: what each tool is, who runs it, when it needs a
human, and the checks that use it (argument schemas, ``approve_when`` rules).

``describe_tools(spec)`` turns an agent's ``tools`` entries into ``ToolDescriptor``s when
the version is applied; the list is stored with the version, so a session pinned to it
sees the same catalog for good. Built-in tools are described here; Python tools and MCP
servers plug in through ``describe_entry`` (their describers are added to ``DESCRIBERS``
by the modules that own them); a name nobody knows is a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

from vigil.schema.agents import AgentSpec, ArgumentRule, ToolDescriptor, ToolEntry, canonical_json
from vigil.schema.tools import BUILTIN_TOOLS

ALWAYS_AVAILABLE = ("finish",)
"""Tools every agent with a definition has, listed or not: how a session ends with a summary."""


class UnknownTool(ValueError):
    """An agent names a tool no describer knows."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


Describer = Callable[[AgentSpec, ToolEntry], ToolDescriptor | None]
"""Describes one entry it knows (None: not mine)."""


def describe_builtin(spec: AgentSpec, entry: ToolEntry) -> ToolDescriptor | None:
    info = BUILTIN_TOOLS.get(entry.name)
    if info is None:
        return None
    return ToolDescriptor(
        name=info.name,
        kind="builtin",
        description=info.description,
        parameters=info.parameters,
        effects="external" if info.risky else info.effects,
        approval=entry.approval,
        approve_when=entry.approve_when,
        handled_by=info.handled_by,
        timeout_seconds=entry.timeout_seconds,
        max_attempts=entry.max_attempts,
    )


DESCRIBERS: list[Describer] = [describe_builtin]
"""Tried in order for each entry; the tools engineer's Python and MCP describers join here."""


def describe_entry(spec: AgentSpec, entry: ToolEntry) -> ToolDescriptor:
    for describer in DESCRIBERS:
        found = describer(spec, entry)
        if found is not None:
            return found
    raise UnknownTool(
        entry.name,
        f"unknown tool {entry.name!r}: not a built-in tool "
        f"({', '.join(sorted(BUILTIN_TOOLS))}) nor one a loaded Python tool module or MCP "
        "server offers",
    )


def describe_tools(spec: AgentSpec) -> list[ToolDescriptor]:
    """The catalog of ``spec``: one descriptor per entry, plus ``finish`` when unlisted."""
    seen: set[str] = set()
    out: list[ToolDescriptor] = []
    for entry in spec.tools:
        if entry.name in seen:
            raise UnknownTool(entry.name, f"tool {entry.name!r} is listed twice")
        seen.add(entry.name)
        out.append(describe_entry(spec, entry))
    for name in ALWAYS_AVAILABLE:
        if name not in seen:
            out.append(describe_entry(spec, ToolEntry(name=name)))
    return out


# --- checks that use the catalog ------------------------------------------------------


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    import json

    return Draft202012Validator(json.loads(schema_json), format_checker=FormatChecker())


def argument_error(descriptor: ToolDescriptor, arguments: dict[str, Any]) -> str | None:
    """None when ``arguments`` fit the tool's JSON schema; else the first error, short."""
    if not descriptor.parameters:
        return None
    validator = _validator(canonical_json(descriptor.parameters))
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
    if not errors:
        return None
    where = "/".join(str(p) for p in errors[0].path) or "(root)"
    return f"invalid arguments for {descriptor.name} at {where}: {errors[0].message[:300]}"


def call_error(
    catalog: dict[str, ToolDescriptor],
    name: str,
    arguments: dict[str, Any],
    allowed: Iterable[str] | None = None,
) -> str | None:
    """Why the model's call cannot run (unknown, not allowed, bad arguments); else None."""
    descriptor = catalog.get(name)
    if descriptor is None:
        return f"unknown tool {name!r}; available: {', '.join(sorted(catalog))}"
    if allowed is not None and name not in set(allowed):
        return f"tool {name!r} is not allowed in this session"
    return argument_error(descriptor, arguments)


def _host_outside(value: str, hosts: list[str]) -> bool:
    try:
        parts = urlsplit(value if "//" in value else f"//{value}")
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return True  # not a URL we can read: ask a human
    if not host:
        return True
    allowed = {h.strip().lower() for h in hosts}
    return host not in allowed and (port is None or f"{host}:{port}" not in allowed)


def rule_matches(rule: ArgumentRule, arguments: dict[str, Any]) -> bool:
    """A rule matches when its argument is present and every condition it sets holds."""
    if rule.argument not in arguments:
        return False
    value = arguments[rule.argument]
    text = value if isinstance(value, str) else canonical_json(value)
    if rule.matches is not None and re.search(rule.matches, text) is None:
        return False
    return not (rule.host_not_in is not None and not _host_outside(text, rule.host_not_in))


def rules_match(descriptor: ToolDescriptor, arguments: dict[str, Any]) -> bool | None:
    """Whether an ``approve_when`` rule of the tool matches (None: the tool has none)."""
    if not descriptor.approve_when:
        return None
    return any(rule_matches(rule, arguments) for rule in descriptor.approve_when)
