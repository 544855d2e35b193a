"""The tool catalog of an agent version: what each tool is, who runs it, when it needs a
human, and the checks that use it (argument schemas, ``approve_when`` rules).

``describe_tools(spec, sources)`` turns an agent's ``tools`` entries and MCP servers into
``ToolDescriptor``s when the version is applied; the list is stored with the version, so
a session pinned to it sees the same catalog for good. Built-in tools are described here;
what Python tools and MCP servers offer is gathered first (``ToolSources``: the loaded
``@vigil.tool`` functions, each server's listed tools) by the code that applies the
version. A name nobody offers is a clear error.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from jsonschema.protocols import Validator

from vigil.schema import patterns
from vigil.schema.agents import AgentSpec, ArgumentRule, ToolDescriptor, ToolEntry, canonical_json
from vigil.schema.arguments import argument_validator, invalid_arguments
from vigil.schema.tools import BUILTIN_TOOLS

ALWAYS_AVAILABLE = ("finish",)
"""Tools every agent with a definition has, listed or not: how a session ends with a summary."""


class UnknownTool(ValueError):
    """An agent names a tool nobody offers (``loc``: where in the agent file)."""

    def __init__(self, name: str, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.loc = loc


@dataclass(frozen=True)
class ToolSources:
    """What Python tools and MCP servers offer, gathered before an agent is described."""

    python: Mapping[str, ToolDescriptor] = field(default_factory=dict)
    """Descriptors of the loaded ``@vigil.tool`` functions, by name."""
    mcp: Mapping[str, Sequence[ToolDescriptor]] = field(default_factory=dict)
    """By MCP server name: the tools it listed (``server.tool``, narrowed by its ``tools``)."""


def describe_builtin(entry: ToolEntry) -> ToolDescriptor | None:
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


def with_entry(offered: ToolDescriptor, entry: ToolEntry) -> ToolDescriptor:
    """A Python or MCP tool as the agent file's entry adjusts it (what the entry sets wins)."""
    given = entry.model_fields_set
    update: dict[str, Any] = {"approve_when": entry.approve_when}
    if "approval" in given:
        update["approval"] = entry.approval
    if entry.timeout_seconds is not None:
        update["timeout_seconds"] = entry.timeout_seconds
    if entry.max_attempts is not None:
        update["max_attempts"] = entry.max_attempts
    return offered.model_copy(update=update)


def _mcp_tool(spec: AgentSpec, sources: ToolSources, name: str) -> ToolDescriptor | None:
    server, dot, _ = name.partition(".")
    if not dot or server not in {s.name for s in spec.mcp_servers}:
        return None
    listed = {t.name: t for t in sources.mcp.get(server, ())}
    found = listed.get(name)
    if found is None:
        raise UnknownTool(
            name,
            f"MCP server {server} offers no tool {name!r}; it offers "
            f"{', '.join(sorted(listed)) or 'none'}",
        )
    return found


def describe_entry(spec: AgentSpec, entry: ToolEntry, sources: ToolSources) -> ToolDescriptor:
    builtin = describe_builtin(entry)
    if builtin is not None:
        return builtin
    offered = sources.python.get(entry.name) or _mcp_tool(spec, sources, entry.name)
    if offered is not None:
        return with_entry(offered, entry)
    loaded = ", ".join(sorted(sources.python)) or "none"
    listed = [t.name for server in spec.mcp_servers for t in sources.mcp.get(server.name, ())]
    raise UnknownTool(
        entry.name,
        f"unknown tool {entry.name!r}"
        f"{did_you_mean(entry.name, [*BUILTIN_TOOLS, *sources.python, *listed])}: "
        f"not a built-in tool ({', '.join(sorted(BUILTIN_TOOLS))}), "
        f"nor a loaded Python tool (loaded: {loaded}; load modules with --tools MODULE "
        "or VIGIL_TOOL_MODULES), "
        "nor SERVER.TOOL of one of the agent's MCP servers",
    )


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the known name closest to a misspelt ``name``, when
    one is close; nothing otherwise."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_tools(spec: AgentSpec, sources: ToolSources | None = None) -> list[ToolDescriptor]:
    """The catalog of ``spec``: one descriptor per entry, then every tool of its MCP servers
    that no entry names, plus ``finish`` when unlisted."""
    sources = sources or ToolSources()
    for k, server in enumerate(spec.mcp_servers):
        if server.name not in sources.mcp:
            raise UnknownTool(
                server.name,
                f"the tools of MCP server {server.name} were not listed",
                ("mcp_servers", k),
            )
    seen: set[str] = set()
    out: list[ToolDescriptor] = []
    for i, entry in enumerate(spec.tools):
        if entry.name in seen:
            raise UnknownTool(
                entry.name, f"tool {entry.name!r} is listed twice", ("tools", i, "name")
            )
        seen.add(entry.name)
        try:
            out.append(describe_entry(spec, entry, sources))
        except UnknownTool as exc:
            raise UnknownTool(exc.name, str(exc), ("tools", i, "name")) from None
    for server in spec.mcp_servers:
        for tool in sources.mcp[server.name]:
            if tool.name not in seen:
                seen.add(tool.name)
                out.append(tool)
    for name in ALWAYS_AVAILABLE:
        if name not in seen:
            out.append(describe_entry(spec, ToolEntry(name=name), sources))
    return out


# --- checks that use the catalog ------------------------------------------------------


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Validator:
    import json

    return argument_validator(json.loads(schema_json))


_BY_OBJECT: dict[int, tuple[dict[str, Any], Validator]] = {}
"""Validators by the schema object they were made for (held here, so its id stays its
own): a cached catalog's descriptors ask again and again, and writing their schema out
canonically to find the validator cost more than the check."""


def _validator_of(parameters: dict[str, Any]) -> Validator:
    found = _BY_OBJECT.get(id(parameters))
    if found is not None and found[0] is parameters:
        return found[1]
    validator = _validator(canonical_json(parameters))
    if len(_BY_OBJECT) >= 1024:
        _BY_OBJECT.clear()
    _BY_OBJECT[id(parameters)] = (parameters, validator)
    return validator


def argument_error(descriptor: ToolDescriptor, arguments: dict[str, Any]) -> str | None:
    """None when ``arguments`` fit the tool's JSON schema; else the first error, short."""
    if not descriptor.parameters:
        return None
    return invalid_arguments(descriptor.name, _validator_of(descriptor.parameters), arguments)


def offered(names: Iterable[str], allowed: Iterable[str] | None) -> list[str]:
    """Of ``names``, those the session may call (``finish`` always), sorted: what an
    unknown tool's error lists, so that it names no tool the model would be refused."""
    keep = None if allowed is None else {*allowed, "finish"}
    return sorted(n for n in names if keep is None or n in keep)


def call_error(
    catalog: dict[str, ToolDescriptor],
    name: str,
    arguments: dict[str, Any],
    allowed: Iterable[str] | None = None,
) -> str | None:
    """Why the model's call cannot run (unknown, not allowed, bad arguments); else None."""
    descriptor = catalog.get(name)
    if descriptor is None:
        return f"unknown tool {name!r}; available: {', '.join(offered(catalog, allowed))}"
    if allowed is not None and name not in set(allowed):
        return f"tool {name!r} is not allowed in this session"
    return argument_error(descriptor, arguments)


_SCHEME_PORTS = {"http": 80, "https": 443}


def _host_outside(value: str, hosts: list[str]) -> bool:
    """Whether the URL ``value`` reaches a host outside ``hosts``: an entry ``host`` is
    that host on its scheme's own port (as ``VIGIL_HTTP_ALLOW`` reads it), ``host:port``
    that port; anything unreadable is outside."""
    try:
        parts = urlsplit(value if "//" in value else f"//{value}")
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return True  # not a URL we can read: ask a human
    if not host:
        return True
    allowed = {h.strip().lower() for h in hosts}
    if port is not None and f"{host}:{port}" in allowed:
        return False
    own_port = port is None or port == _SCHEME_PORTS.get(parts.scheme.lower())
    return not (own_port and host in allowed)


def _texts(value: Any) -> list[str]:
    """What a rule reads of an argument: a string as it is; anything else as JSON, with
    its characters as written and (when that differs) escaped, so a rule written either
    way matches (reading more can only ask more)."""
    if isinstance(value, str):
        return [value]
    written = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    escaped = canonical_json(value)
    return [written] if written == escaped else [written, escaped]


def rule_matches(rule: ArgumentRule, arguments: dict[str, Any]) -> bool:
    """A rule matches when its argument is present and every condition it sets holds."""
    if rule.argument not in arguments:
        return False
    return any(_text_matches(rule, text) for text in _texts(arguments[rule.argument]))


def _text_matches(rule: ArgumentRule, text: str) -> bool:
    if rule.matches is not None and not patterns.matches_as_written(rule.matches, text):
        return False
    return not (rule.host_not_in is not None and not _host_outside(text, rule.host_not_in))


def rules_match(descriptor: ToolDescriptor, arguments: dict[str, Any]) -> bool | None:
    """Whether an ``approve_when`` rule of the tool matches (None: the tool has none)."""
    if not descriptor.approve_when:
        return None
    return any(rule_matches(rule, arguments) for rule in descriptor.approve_when)
