"""Agent files: one agent a file, TOML or YAML, validated by ``AgentSpec``.

Every problem is reported as ``FILE:LINE: FIELD: what is wrong``: pydantic's error
locations are mapped back to lines (YAML through the composer's node marks, TOML
through a scan of its tables and keys), and the checks pydantic cannot make (template
placeholders, regular expressions, tool names) are reported the same way.
"""

from __future__ import annotations

import dataclasses
import re
import string
import tomllib
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vigil.activities.agents.catalog import (
    ToolSources,
    UnknownTool,
    describe_tools,
    did_you_mean,
)
from vigil.activities.hooks.urls import url_problem
from vigil.schema import jsonlimits, patterns
from vigil.schema.agents import APPLYING, AgentSpec, ToolDescriptor, content_hash
from vigil.schema.limits import budget_problem, seconds_problem

SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
MAX_FILE_BYTES = 1024 * 1024
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    line: int | None
    field: str
    message: str


class AgentFileError(ValueError):
    """A file that is not a valid agent definition; ``str()`` lists every problem."""

    def __init__(self, path: Path, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        out = []
        for p in self.problems:
            where = f"{self.path}:{p.line}" if p.line else str(self.path)
            out.append(f"{where}: {p.field}: {p.message}" if p.field else f"{where}: {p.message}")
        return out


@dataclass(frozen=True)
class LoadedAgent:
    path: Path
    spec: AgentSpec
    content_hash: str
    tools: list[ToolDescriptor] = field(default_factory=list)
    locate: Callable[[Loc], int | None] = field(default=lambda loc: None, repr=False)
    """The line of a field in the file (for problems found after parsing)."""


def field_name(loc: Loc) -> str:
    """``("tools", 1, "approval")`` -> ``tools[1].approval``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def find_files(paths: Iterable[Path]) -> list[Path]:
    """The agent files named, folders expanded (sorted, not recursive into hidden ones)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in SUFFIXES
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def load(path: Path, sources: ToolSources | None = None) -> LoadedAgent:
    """Read, parse, validate and describe one agent file; raises AgentFileError."""
    return describe(read(path), sources or ToolSources())


def read(path: Path) -> LoadedAgent:
    """Read, parse and validate one agent file, its tools not yet described (that needs
    the Python tools and MCP servers it names: ``describe``); raises AgentFileError."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise AgentFileError(
            path, [Problem(None, "", "not an agent file: use .toml, .yaml or .yml")]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AgentFileError(path, [Problem(None, "", exc.strerror or str(exc))]) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise AgentFileError(path, [Problem(None, "", f"larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgentFileError(path, [Problem(None, "", f"not UTF-8 text: {exc.reason}")]) from exc
    return parse_spec(text, path, kind)


def parse(text: str, path: Path, kind: str, sources: ToolSources | None = None) -> LoadedAgent:
    """Parse, validate and describe the text of an agent file; raises AgentFileError."""
    return describe(parse_spec(text, path, kind), sources or ToolSources())


TOO_DEEP = f"nests deeper than {jsonlimits.MAX_ARGUMENT_DEPTH} levels"
"""How an agent file whose values nest past what a definition may hold is refused (as a
tool call's JSON arguments are)."""


def parse_spec(text: str, path: Path, kind: str) -> LoadedAgent:
    try:
        data, locate = _parse_toml(text, path) if kind == "toml" else _parse_yaml(text, path)
    except RecursionError:  # deeper than the parser can go, so past the limit too
        raise AgentFileError(path, [Problem(None, "", TOO_DEEP)]) from None
    if not isinstance(data, dict):
        raise AgentFileError(path, [Problem(1, "", "an agent file holds one mapping of fields")])
    if jsonlimits.depth(data, jsonlimits.MAX_ARGUMENT_DEPTH) > jsonlimits.MAX_ARGUMENT_DEPTH:
        raise AgentFileError(path, [Problem(None, "", TOO_DEEP)])
    if jsonlimits.has_lone_surrogate(data):
        # YAML's (and JSON's) "\ud800" escape parses to text that UTF-8 cannot hold.
        raise AgentFileError(
            path,
            [Problem(None, "", "holds a lone surrogate (\\ud800-\\udfff), which is not text")],
        )
    try:
        spec = AgentSpec.model_validate(data, context=APPLYING)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc: Loc = tuple(error.get("loc", ()))
            message = str(error.get("msg", "invalid"))
            if error.get("type") == "extra_forbidden":
                message = f"unknown field{did_you_mean(str(loc[-1]), _fields_at(loc))}"
            elif error.get("type") == "value_error":  # a check of ours: its own words
                message = message.removeprefix("Value error, ")
            problems.append(Problem(locate(loc), field_name(loc), message))
        raise AgentFileError(path, problems) from exc
    problems = _semantic_problems(spec)
    if problems:
        raise AgentFileError(path, _located(problems, locate))
    return LoadedAgent(path=path, spec=spec, content_hash=content_hash(spec), locate=locate)


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The field names of the model an agent file's key at ``loc`` sits in (what a
    misspelt key is matched against): ``model.topp`` is matched against ``[model]``'s."""
    model: type[BaseModel] = AgentSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if info is None:
            break
        pending: list[Any] = [info.annotation]
        inner: type[BaseModel] | None = None
        while pending and inner is None:
            kind = pending.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                inner = kind
            else:
                pending.extend(typing.get_args(kind))
        if inner is None:
            break
        model = inner
    return [f.alias or n for n, f in model.model_fields.items()]


MAX_CATALOG_BYTES = 1 << 20
"""The most a version's tool catalog may weigh (its JSON): a session carries it in its
start and its model calls, which Temporal refuses past 4 MiB (20,000 tools applied, and
then every start failed)."""


def describe(agent: LoadedAgent, sources: ToolSources) -> LoadedAgent:
    """``agent`` with its tool catalog; a tool nobody offers is reported at its line, and
    a catalog too large for a session to carry is refused."""
    try:
        tools = describe_tools(agent.spec, sources)
    except UnknownTool as exc:
        raise tool_problem(agent, exc) from None
    size = sum(len(t.model_dump_json().encode()) for t in tools)
    if size > MAX_CATALOG_BYTES:
        problem = Problem(
            None,
            "tools",
            f"its {len(tools)} tools take {size} bytes described, over the "
            f"{MAX_CATALOG_BYTES} a session can carry: name fewer (an MCP server's "
            "`tools` lists those the agent uses)",
        )
        raise AgentFileError(agent.path, _located([problem], agent.locate))
    return dataclasses.replace(agent, tools=tools)


def tool_problem(agent: LoadedAgent, exc: UnknownTool) -> AgentFileError:
    """The file error of a tool (or MCP server) that cannot be described."""
    problem = Problem(None, field_name(exc.loc or ("tools",)), str(exc))
    return AgentFileError(agent.path, _located([problem], agent.locate))


def _located(problems: list[Problem], locate: Callable[[Loc], int | None]) -> list[Problem]:
    return [
        Problem(locate(_loc_of(p.field)), p.field, p.message) if p.line is None else p
        for p in problems
    ]


def _loc_of(name: str) -> Loc:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", name):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def placeholders(template: str) -> list[str]:
    """The placeholders a ``str.format`` template uses, as written between its braces
    (a format spec or conversion included: ``goal:d``); ValueError when it is malformed."""
    return [
        name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        for _, name, spec, conversion in string.Formatter().parse(template)
        if name is not None
    ]


def _semantic_problems(spec: AgentSpec) -> list[Problem]:
    problems: list[Problem] = []
    if spec.system_prompt is not None:
        known = {"goal", "agent", *spec.variables}
        try:
            names = placeholders(spec.system_prompt)
        except ValueError as exc:
            problems.append(Problem(None, "system_prompt", f"bad template: {exc}"))
        else:
            for name in names:
                base = re.split(r"[.\[!:]", name, maxsplit=1)[0]
                if base != name or not name:
                    problems.append(
                        Problem(
                            None,
                            "system_prompt",
                            f"placeholder {{{name}}}: use plain names ({{goal}}, {{agent}}, "
                            "or a key of variables); write {{ and }} for braces",
                        )
                    )
                elif name not in known:
                    problems.append(
                        Problem(
                            None,
                            "system_prompt",
                            f"placeholder {{{name}}} is not goal, agent or a key of variables",
                        )
                    )
    for i, tool in enumerate(spec.tools):
        for j, rule in enumerate(tool.approve_when):
            if rule.matches is not None and (why := patterns.pattern_error(rule.matches)):
                problems.append(
                    Problem(None, field_name(("tools", i, "approve_when", j, "matches")), why)
                )
            if rule.matches is None and rule.host_not_in is None:
                problems.append(
                    Problem(
                        None,
                        field_name(("tools", i, "approve_when", j)),
                        "a rule needs `matches` or `host_not_in`",
                    )
                )
    for k, hook in enumerate(spec.webhooks or ()):
        if (why := url_problem(hook.url)) is not None:
            problems.append(Problem(None, field_name(("webhooks", k, "url")), why))
    out_of_range = budget_problem(spec.budget, datetime.now(UTC))
    if out_of_range is not None:
        problems.append(Problem(None, *out_of_range))
    too_long = seconds_problem(spec.approval_timeout_seconds, positive=True)
    if too_long is not None:
        problems.append(Problem(None, "approval_timeout_seconds", too_long))
    if spec.conversation_idle_seconds is not None:
        too_long = seconds_problem(spec.conversation_idle_seconds, positive=True)
        if too_long is not None:
            problems.append(Problem(None, "conversation_idle_seconds", too_long))
    for k, server in enumerate(spec.mcp_servers):
        if (server.command is None) == (server.url is None):
            problems.append(
                Problem(
                    None,
                    field_name(("mcp_servers", k)),
                    "give exactly one of `command` (stdio) or `url` (streamable HTTP)",
                )
            )
    return problems


# --- YAML: node marks ---------------------------------------------------------------


MAX_YAML_VALUES = 100_000
"""The most values a YAML file may stand for once its aliases are expanded: a file of a
few hundred bytes whose aliases nest stands for billions, which validating would expand."""


def _yaml_problems(root: yaml.Node | None) -> list[Problem]:
    """What YAML allows that an agent file may not hold: a key given twice in a mapping
    (the last one silently won), and aliases that expand the file past
    ``MAX_YAML_VALUES``. The expanded size is counted once per node, so a bomb is
    measured, never expanded."""
    problems: list[Problem] = []
    sizes: dict[int, int] = {}
    crossed: list[int] = []  # the line of the first key whose value takes the file past

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = MAX_YAML_VALUES + 1  # a node that holds itself never ends
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    line = key.start_mark.line + 1
                    same = (key.tag, key.value)  # 1 and "1" are two keys
                    if same in seen:
                        problems.append(
                            Problem(
                                line,
                                "",
                                f"duplicate key {key.value!r} (first at line {seen[same]})",
                            )
                        )
                    seen.setdefault(same, line)
                total += size(key) + size(value)
                if total > MAX_YAML_VALUES:
                    if not crossed:
                        crossed.append(key.start_mark.line + 1)
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > MAX_YAML_VALUES:
                    break
        sizes[id(node)] = total
        return total

    if root is not None and size(root) > MAX_YAML_VALUES:
        problems.append(
            Problem(
                crossed[0] if crossed else root.start_mark.line + 1,
                "",
                f"the file expands to more than {MAX_YAML_VALUES:,} values through its aliases",
            )
        )
    return problems


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1) reading a number in exponent form without a dot
    (``1e3``, ``5e-1``) as a number, as YAML 1.2 and JSON do, not as text."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _constructed(root: yaml.Node | None) -> Any:
    """The values of a composed document (what ``yaml.safe_load`` gives, without parsing
    the text a second time)."""
    if root is None:
        return None
    loader = _Loader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _parse_yaml(text: str, path: Path) -> tuple[Any, Any]:
    try:
        root = yaml.compose(text, Loader=_Loader)
        problems = _yaml_problems(root)
        if problems:
            raise AgentFileError(path, problems)
        data = _constructed(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AgentFileError(path, [Problem(line, "", f"not valid YAML: {problem}")]) from exc

    def locate(loc: Loc) -> int | None:
        node = root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    return data, locate


# --- TOML: a scan of tables and keys --------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _key_parts(dotted: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(_PART, dotted)]


def _parse_toml(text: str, path: Path) -> tuple[Any, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise AgentFileError(path, [Problem(line, "", f"not valid TOML: {message}")]) from exc

    lines: dict[Loc, int] = {}
    counters: dict[tuple[str, ...], int] = {}
    table: list[str | int] = []
    in_multiline = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.count('"""') % 2 == 1 or raw.count("'''") % 2 == 1:
            in_multiline = not in_multiline
            if not in_multiline:
                continue
        elif in_multiline:
            continue
        header = _HEADER.match(raw)
        if header and not _KEY.match(raw):
            names = _key_parts(header.group(2))
            if header.group(1) == "[[":
                key = tuple(names)
                counters[key] = counters.get(key, -1) + 1
                table = [*names, counters[key]]
            else:
                table = list(names)
            lines.setdefault(tuple(table), number)
            continue
        key_match = _KEY.match(raw)
        if key_match:
            loc = (*table, *_key_parts(key_match.group(1)))
            lines.setdefault(tuple(loc), number)

    def locate(loc: Loc) -> int | None:
        for size in range(len(loc), 0, -1):
            if loc[:size] in lines:
                return lines[loc[:size]]
        return 1 if loc else None

    return data, locate
