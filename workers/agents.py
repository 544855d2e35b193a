"""Agent definitions as a service: apply files, list, show, history, diff; and the check
that a session's agent exists before it is started. The CLI and the client call these;
the SQL lives in ``activities.record.agents``."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import agents as agent_rows
from vigil.activities.record.agents import AgentVersionRow
from vigil.schema.agents import (
    AgentSpec,
    ToolDescriptor,
    agent_version_error,
    content_hash,
)
from vigil.schema.payloads import Budget, ToolPolicy
from vigil.workers.settings import Settings

if TYPE_CHECKING:
    # Files and the catalog (yaml, jsonschema) load when applying, not with the client.
    from vigil.activities.agents.catalog import ToolSources
    from vigil.activities.agents.files import AgentFileError, LoadedAgent

ToolSourcing = Callable[[AgentSpec], "Awaitable[ToolSources]"]
"""What the Python tools and MCP servers an agent names offer (``tool_wiring.tool_sourcing``);
may raise ``UnknownTool`` (an MCP server that cannot be listed)."""


class AgentError(Exception):
    """A failure with a message meant for a person; ``exit_code`` as the CLI's."""

    exit_code = 1


class InvalidAgentFiles(AgentError):
    exit_code = 2

    def __init__(self, errors: list[AgentFileError]) -> None:
        self.errors = errors
        super().__init__("\n".join(line for e in errors for line in e.lines()))


class AgentNotFound(AgentError):
    exit_code = 4


class BadAgentVersion(AgentError):
    """A version no definition can have (``agent_version_error``): bad input, as the
    API's 422, not an unknown version."""

    exit_code = 2


def _check_version(version: int | None) -> None:
    error = agent_version_error(version) if version is not None else None
    if error is not None:
        raise BadAgentVersion(error)


class ToolsUnavailable(AgentError):
    """The Python tool modules named for describing agents cannot be loaded."""

    exit_code = 2


@dataclass(frozen=True)
class AppliedAgent:
    name: str
    version: int
    content_hash: str
    created: bool
    """False: the file matched the newest version, nothing was added."""
    path: str
    warnings: list[str] = field(default_factory=list)
    """What may keep its sessions from running (a model connection not configured where
    it was applied); applied nonetheless."""
    tools_changed: bool = False
    """A version created for the same file: its tools changed (an MCP server's listing, a
    Python tool's signature), so the content hash is the version before's."""


@dataclass(frozen=True)
class AgentListing:
    name: str
    versions: int
    newest: int
    content_hash: str
    description: str
    updated_at: datetime


@dataclass(frozen=True)
class AgentVersionInfo:
    name: str
    version: int
    content_hash: str
    created_at: datetime
    created_by: str | None
    source: str | None
    spec: AgentSpec
    tools: list[ToolDescriptor]


@dataclass(frozen=True)
class AgentDiff:
    name: str
    old: int
    new: int
    lines: list[str]
    """A unified diff of the two specs (canonical, indented JSON); empty when equal."""


class KnownVersions:
    """The agent definitions a long-lived starter (vigil's client in the API) read, on the
    worker's reader of versions (``AgentVersions``: one statement asks which version is
    the newest, and the definition comes and is decoded only when that changed), each
    validated once: by agent, version and content hash (an agent erased and defined again
    starts over at version 1)."""

    MAX_VERSIONS = 1024

    def __init__(self, sessionmaker: async_sessionmaker[DbSession]) -> None:
        from vigil.activities.agents.runtime import AgentVersions

        self._versions = AgentVersions(sessionmaker)
        self._infos: dict[tuple[str, int, str], AgentVersionInfo] = {}

    async def newest(self, name: str) -> AgentVersionInfo | None:
        row = await self._versions.newest(name)
        if row is None:
            return None
        key = (row.agent_id, row.version, row.content_hash)
        info = self._infos.get(key)
        if info is None:
            if len(self._infos) >= self.MAX_VERSIONS:
                self._infos.clear()
            info = self._infos[key] = _info(row)
        return info


def _info(row: AgentVersionRow) -> AgentVersionInfo:
    return AgentVersionInfo(
        name=row.agent_id,
        version=row.version,
        content_hash=row.content_hash,
        created_at=row.created_at,
        created_by=row.created_by,
        source=row.source,
        spec=AgentSpec.model_validate(row.spec),
        tools=[ToolDescriptor.model_validate(t) for t in row.tools],
    )


def load_all(paths: list[Path]) -> list[LoadedAgent]:
    """Every agent file under ``paths``, validated (tools not yet described); all problems
    of all files at once."""
    from vigil.activities.agents.files import AgentFileError, Problem, find_files
    from vigil.activities.agents.files import read as load

    files = find_files(paths)
    if not files:
        raise AgentError("no agent files (.toml, .yaml, .yml) found")
    loaded: list[LoadedAgent] = []
    errors: list[AgentFileError] = []
    for path in files:
        if not path.exists():
            errors.append(AgentFileError(path, [Problem(None, "", "no such file")]))
            continue
        try:
            loaded.append(load(path))
        except AgentFileError as exc:
            errors.append(exc)
    seen: dict[str, Path] = {}
    for agent in loaded:
        first = seen.setdefault(agent.spec.name, agent.path)
        if first != agent.path:
            errors.append(
                AgentFileError(
                    agent.path,
                    [Problem(None, "name", f"agent {agent.spec.name!r} is also in {first}")],
                )
            )
    if errors:
        raise InvalidAgentFiles(errors)
    return loaded


class AgentService:
    """Agent definitions in PostgreSQL. ``tools`` describes the Python tools and MCP
    servers of the agents applied (built-in tools only without it)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        tools: ToolSourcing | None = None,
        known: KnownVersions | None = None,
        connections: Collection[str] | None = None,
    ) -> None:
        self.db = sessionmaker
        self.tools = tools
        self.known = known
        self.connections = connections
        """The model connections configured where definitions are applied (None: not
        checked): a definition naming another is applied with a warning."""

    async def apply(
        self, paths: list[Path], *, by: str | None = None, refresh: bool = False
    ) -> list[AppliedAgent]:
        """Validate every file first, then store them in one transaction: a new version
        for each changed definition, none for an unchanged one.

        A changed definition's tools are described anew (its MCP servers started and
        listed); an unchanged one keeps its stored catalog unless ``refresh``, when a
        catalog that changed (a server's tools did) makes a new version too.
        """
        return await self.apply_loaded(load_all(paths), by=by, refresh=refresh)

    @staticmethod
    def parse_text(text: str, kind: str) -> LoadedAgent:
        """One agent definition given as the text of a file (``kind``: toml, yaml or
        json), validated as ``apply`` validates a file (store it with ``apply_loaded``)."""
        from vigil.activities.agents.files import (
            MAX_FILE_BYTES,
            AgentFileError,
            Problem,
            parse_spec,
        )

        if kind not in ("toml", "yaml", "json"):
            raise AgentError(f"unknown agent file format {kind!r}: toml, yaml or json")
        path = Path(f"(request).{kind}")
        problem: str | None = None
        if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
            problem = f"larger than {MAX_FILE_BYTES} bytes"
        elif "\x00" in text:
            problem = "holds a NUL character"
        if problem is not None:
            raise InvalidAgentFiles([AgentFileError(path, [Problem(None, "", problem)])])
        try:
            # JSON is YAML: parsed by the YAML reader, problems are located at their line.
            return parse_spec(text, path, "toml" if kind == "toml" else "yaml")
        except AgentFileError as exc:
            raise InvalidAgentFiles([exc]) from None

    async def apply_loaded(
        self, loaded: list[LoadedAgent], *, by: str | None = None, refresh: bool = False
    ) -> list[AppliedAgent]:
        """Store validated definitions (see ``apply``)."""
        from vigil.activities.agents.files import AgentFileError, describe

        async with self.db() as db:
            newest = {a.spec.name: await agent_rows.newest_version(db, a.spec.name) for a in loaded}
        kept = {
            a.spec.name
            for a in loaded
            if not refresh
            and (row := newest[a.spec.name]) is not None
            and row.content_hash == a.content_hash
        }
        described: list[LoadedAgent] = []
        errors: list[AgentFileError] = []
        again: set[str] = set()  # unchanged files described again (stored over their match)
        for agent in loaded:
            if agent.spec.name in kept:
                if not agent.spec.mcp_servers:
                    # Nothing to start: described again, so a Python tool whose signature
                    # changed makes a new version (the store keeps the same catalog). Where
                    # its tools cannot be described (their module is not here), it keeps
                    # the stored catalog.
                    with contextlib.suppress(AgentFileError):
                        agent = describe(agent, await self._sources(agent))
                        kept.discard(agent.spec.name)
                        again.add(agent.spec.name)
                described.append(agent)
                continue
            try:
                described.append(describe(agent, await self._sources(agent)))
            except AgentFileError as exc:
                errors.append(exc)
        if errors:
            raise InvalidAgentFiles(errors)
        async with self.db.begin() as db:
            applied = []
            for a in described:
                if a.spec.name in kept:
                    applied.append(await self._keep(db, a, newest[a.spec.name]))
                    continue
                if a.spec.name in again:
                    # A version applied meanwhile is not undone by the older file.
                    await self._keep(db, a, newest[a.spec.name])
                stored = await self._store(db, a, by)
                before = newest[a.spec.name]
                if stored.created and before is not None:
                    same_file = before.content_hash == stored.content_hash
                    stored = dataclasses.replace(stored, tools_changed=same_file)
                applied.append(stored)
        return [
            dataclasses.replace(done, warnings=self._warnings(agent.spec))
            for done, agent in zip(applied, described, strict=True)
        ]

    def _warnings(self, spec: AgentSpec) -> list[str]:
        """What may keep the agent's sessions from running where they are applied."""
        if self.connections is None:
            return []
        known = ", ".join(sorted(self.connections))
        said = {
            "connection": "each call waits for a worker that has it",
            "fallback": "a worker without it keeps calls on the first connection",
        }
        return [
            f"model {role} {name!r} is not configured here (known: {known}): {said[role]}"
            for role, name in (
                ("connection", spec.model.connection),
                ("fallback", spec.model.fallback),
            )
            if name is not None and name not in self.connections
        ]

    async def _sources(self, agent: LoadedAgent) -> ToolSources:
        """What the tools the agent names offer; AgentFileError when a server fails."""
        from vigil.activities.agents.catalog import ToolSources, UnknownTool
        from vigil.activities.agents.files import tool_problem

        if self.tools is None:
            return ToolSources()
        try:
            return await self.tools(agent.spec)
        except UnknownTool as exc:
            raise tool_problem(agent, exc) from None

    @staticmethod
    async def _keep(
        db: DbSession, agent: LoadedAgent, seen: AgentVersionRow | None
    ) -> AppliedAgent:
        """An unchanged definition: its newest version, unless one was added meanwhile."""
        row = await agent_rows.newest_version(db, agent.spec.name)
        if row is None or seen is None or row.version != seen.version:
            raise AgentError(f"agent {agent.spec.name!r} changed while applying: apply again")
        return AppliedAgent(
            name=row.agent_id,
            version=row.version,
            content_hash=row.content_hash,
            created=False,
            path=str(agent.path),
        )

    async def apply_spec(self, spec: AgentSpec, *, by: str | None = None) -> AppliedAgent:
        """Store a definition built in code (as a file would be)."""
        from vigil.activities.agents.files import AgentFileError, LoadedAgent, describe

        try:
            agent = LoadedAgent(Path("-"), spec, content_hash(spec))
            agent = describe(agent, await self._sources(agent))
        except AgentFileError as exc:
            raise AgentError("; ".join(p.message for p in exc.problems)) from None
        async with self.db.begin() as db:
            return await self._store(db, agent, by, source=None)

    @staticmethod
    async def _store(
        db: DbSession, agent: LoadedAgent, by: str | None, source: str | None = ""
    ) -> AppliedAgent:
        row, created = await agent_rows.add_version(
            db,
            agent.spec.name,
            spec=agent.spec.model_dump(mode="json"),
            content_hash=agent.content_hash,
            tools=[t.model_dump(mode="json") for t in agent.tools],
            source=str(agent.path) if source == "" else source,
            created_by=by,
        )
        return AppliedAgent(
            name=row.agent_id,
            version=row.version,
            content_hash=row.content_hash,
            created=created,
            path=str(agent.path),
        )

    async def list_agents(self) -> list[AgentListing]:
        async with self.db() as db:
            rows = await agent_rows.list_agents(db)
        return [
            AgentListing(
                name=r.agent_id,
                versions=r.versions,
                newest=r.newest,
                content_hash=r.content_hash,
                description=r.description,
                updated_at=r.updated_at,
            )
            for r in rows
        ]

    async def find(self, name: str, version: int | None = None) -> AgentVersionInfo | None:
        """The definition's ``version`` (its newest by default); None when there is none.
        Every read of a version comes here: BadAgentVersion for one no definition can
        have."""
        _check_version(version)
        if "\x00" in name:  # PostgreSQL cannot hold it: no agent has such a name
            return None
        if version is None and self.known is not None:
            return await self.known.newest(name)
        async with self.db() as db:
            row = (
                await agent_rows.newest_version(db, name)
                if version is None
                else await agent_rows.get_version(db, name, version)
            )
        return _info(row) if row is not None else None

    async def show(self, name: str, version: int | None = None) -> AgentVersionInfo:
        found = await self.find(name, version)
        if found is None:
            raise await self._unknown(name, version)
        return found

    async def history(self, name: str) -> list[AgentVersionInfo]:
        if "\x00" in name:
            raise AgentNotFound(f"agent {name!r} has no definition")
        async with self.db() as db:
            rows = await agent_rows.list_versions(db, name)
        if not rows:
            raise AgentNotFound(f"agent {name!r} has no definition")
        return [_info(r) for r in rows]

    async def diff(self, name: str, old: int | None = None, new: int | None = None) -> AgentDiff:
        """``old`` -> ``new``; by default the newest version against the one before it."""
        _check_version(old)
        _check_version(new)
        if new is None:
            new = (await self.show(name)).version
        if old is None:
            old = max(new - 1, 1)
        a, b = await self.show(name, old), await self.show(name, new)
        lines = _diff(
            a.spec.model_dump(mode="json"), b.spec.model_dump(mode="json"), name, old, new
        )
        # A refreshed catalog (an MCP server's tools changed) under an unchanged spec.
        tools_a = [t.model_dump(mode="json") for t in a.tools]
        tools_b = [t.model_dump(mode="json") for t in b.tools]
        lines += _diff(tools_a, tools_b, f"{name} tools", old, new)
        return AgentDiff(name=name, old=old, new=new, lines=lines)

    async def _unknown(self, name: str, version: int | None) -> AgentNotFound:
        newest = await self.find(name) if version is not None else None
        if newest is not None:
            return AgentNotFound(
                f"agent {name!r} has no version {version} (newest: {newest.version})"
            )
        return AgentNotFound(
            f"agent {name!r} has no definition: apply one with `vigil agent apply FILE`"
        )

    async def require_startable(
        self, name: str, version: int | None, *, allow_undefined: bool
    ) -> AgentVersionInfo | None:
        """The definition a session of ``name`` would start with; None for an agent
        without one when that is allowed. Raises AgentNotFound otherwise."""
        found = await self.find(name, version)
        if found is not None:
            return found
        if version is None and allow_undefined:
            return None
        error = await self._unknown(name, version)
        if version is None:
            error = AgentNotFound(
                f"{error} (or allow agents without one: VIGIL_ALLOW_UNDEFINED_AGENTS=1 "
                "where sessions are started; `vigil start` and `vigil message` also take "
                "--undefined-agent)"
            )
        raise error


async def apply_files(
    settings: Settings,
    db: async_sessionmaker[DbSession],
    paths: list[Path],
    *,
    tools: list[str],
    by: str | None,
    refresh: bool = False,
) -> list[AppliedAgent]:
    """``vigil agent apply``: Python tools from ``tools`` and the settings' modules, MCP
    credentials through the worker's resolver (the demo applies its agent with this too)."""
    from vigil.workers.tool_wiring import with_worker_flags

    service = applying_service(with_worker_flags(settings, tools, None, False), db)
    return await service.apply(paths, by=by, refresh=refresh)


def applying_service(settings: Settings, db: async_sessionmaker[DbSession]) -> AgentService:
    """An AgentService that describes Python tools (the settings' modules) and MCP
    servers as `vigil agent apply` does: the API applies definitions with it."""
    # The tool wiring (the mcp SDK, tool modules) loads when applying, not with the client.
    from vigil.activities.tools.loader import ToolLoadError
    from vigil.workers.models import ConfigError, credential_resolver, model_connections
    from vigil.workers.tool_wiring import tool_sourcing

    try:
        sourcing = tool_sourcing(settings, credential_resolver(settings, db).resolve)
    except ToolLoadError as exc:
        raise ToolsUnavailable(str(exc)) from None
    try:
        connections: list[str] | None = list(model_connections(settings))
    except ConfigError:
        connections = None  # the worker refuses that setting; nothing to check against
    return AgentService(db, sourcing, connections=connections)


def _diff(a: object, b: object, label: str, old: int, new: int) -> list[str]:
    text_a = json.dumps(a, indent=2, sort_keys=True)
    text_b = json.dumps(b, indent=2, sort_keys=True)
    return list(
        difflib.unified_diff(
            text_a.splitlines(),
            text_b.splitlines(),
            fromfile=f"{label} v{old}",
            tofile=f"{label} v{new}",
            lineterm="",
        )
    )


def start_overrides(
    budget: Budget | None,
    policy: ToolPolicy | None,
    system_prompt: str | None,
    extra_fields: set[str],
) -> list[str]:
    """The settings a starter gave explicitly: they win over the agent definition's."""
    out = [f"budget.{name}" for name in sorted(budget.model_fields_set)] if budget else []
    if policy is not None and "approval_timeout_seconds" in policy.model_fields_set:
        out.append("policy.approval_timeout_seconds")
    if system_prompt is not None:
        out.append("system_prompt")
    settings = ("context_messages", "max_tokens_per_call", "conversation_idle_seconds")
    out.extend(f for f in settings if f in extra_fields)
    return out
