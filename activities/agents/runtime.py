"""From a stored agent version to what a session runs: ``AgentRuntime``.

``vigil.resolve_agent`` runs once per session run: it reads the pinned version (or the
newest, at a session's first run), renders the system prompt template with the goal,
and returns names and small metadata only (never a credential). Versions are
immutable, so the worker caches them: ``call_model`` and ``run_tool`` read a version's
tool catalog (and an MCP tool's server) from here on every step without a query.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from vigil.activities.record import agents as agent_rows
from vigil.activities.record.agents import AgentVersionRow
from vigil.activities.record.lean import engine_of
from vigil.activities.record.rls import bound_acting_for
from vigil.schema import names
from vigil.schema.agents import (
    AGENT_VERSIONS,
    AgentRuntime,
    AgentSpec,
    McpServerSpec,
    ResolveAgentInput,
    ToolDescriptor,
    agent_version_error,
)

CACHE_SIZE = 256


def render_prompt(spec: AgentSpec, goal: str) -> str | None:
    """The system prompt template filled with ``{goal}``, ``{agent}`` and the variables.
    Each placeholder is replaced by its value's text and nothing else: a format spec or a
    conversion (``{goal:>400000000}``, ``{goal!r}``, refused at apply since; a version
    stored before may hold one) is not applied, and a name that has no value stays as
    written. ``str.format`` built the padding, read attributes, and failed the start."""
    around = prompt_around_goal(spec)
    return None if around is None else goal.join(around)


def prompt_around_goal(spec: AgentSpec) -> list[str] | None:
    """The system prompt template filled with all but ``{goal}``, as the texts around
    each ``{goal}`` (one text when it holds none); None without a template."""
    if spec.system_prompt is None:
        return None
    values = {**spec.variables, "agent": spec.name}
    texts: list[str] = []
    parts: list[str] = []
    for literal, name, format_spec, conversion in string.Formatter().parse(spec.system_prompt):
        parts.append(literal)
        if name is None:
            continue
        if name == "goal":
            texts.append("".join(parts))
            parts = []
        elif name in values:
            parts.append(str(values[name]))
        else:
            tail = (f"!{conversion}" if conversion else "") + (
                f":{format_spec}" if format_spec else ""
            )
            parts.append("{" + name + tail + "}")
    texts.append("".join(parts))
    return texts


def build_runtime(
    row: AgentVersionRow,
    goal: str,
    spec: AgentSpec | None = None,
    tools: list[ToolDescriptor] | None = None,
) -> AgentRuntime:
    """What a session of ``row`` runs. ``spec`` and ``tools``: the row's, validated
    already (the worker keeps them with the row)."""
    spec = spec if spec is not None else AgentSpec.model_validate(row.spec)
    if tools is None:
        tools = [ToolDescriptor.model_validate(t) for t in row.tools]
    return runtime_of(row.agent_id, row.version, row.content_hash, spec, tools, goal)


def runtime_of(
    agent_id: str,
    version: int,
    content_hash: str,
    spec: AgentSpec,
    tools: list[ToolDescriptor],
    goal: str,
) -> AgentRuntime:
    """What a session of this version runs (without its webhook events)."""
    around = prompt_around_goal(spec)
    return AgentRuntime(
        agent_id=agent_id,
        version=version,
        content_hash=content_hash,
        system_prompt=render_prompt(spec, goal),
        prompt_around_goal=around if around is not None and len(around) > 1 else None,
        model=spec.model,
        tools=tools,
        context=spec.context,
        memory=spec.memory,
        budget=spec.budget,
        approval_timeout_seconds=spec.approval_timeout_seconds,
        conversation_idle_seconds=spec.conversation_idle_seconds,
    )


class AgentVersions:
    """The worker's reader of agent versions, with a cache of the immutable rows."""

    def __init__(self, sessionmaker: async_sessionmaker[DbSession]) -> None:
        self._sessionmaker = sessionmaker
        self._rows: OrderedDict[tuple[str, int], AgentVersionRow] = OrderedDict()
        self._catalogs: dict[tuple[str, int], dict[str, ToolDescriptor]] = {}
        self._specs: dict[tuple[str, int], AgentSpec] = {}
        self._newest: dict[str, int] = {}
        """The newest version cached of each agent (it may have newer ones since)."""

    async def get(
        self, agent_id: str, version: int, *, fresh: bool = False
    ) -> AgentVersionRow | None:
        """The version, or None when the agent has none such. A version no definition
        can have (``agent_version_error``, as a redirect signal may name) is none such,
        without a query: the record's integer cannot even be asked for it. ``fresh``:
        read from the record even when kept (a version a session moves to: it may have
        been erased since this worker read it)."""
        if agent_version_error(version) is not None:
            return None
        key = (agent_id, version)
        found = None if fresh else self._rows.get(key)
        if found is not None:
            self._rows.move_to_end(key)
            return found
        # One statement on a connection bound to the agent's role, as ``newest`` reads:
        # a session's next run and a redirect read their version here.
        async with bound_acting_for(engine_of(self._sessionmaker), agent_id) as db:
            found = await agent_rows.get_version(db, agent_id, version)
        if found is not None:
            self._remember(found)
        else:
            self._forget(key)
        return found

    async def newest(self, agent_id: str) -> AgentVersionRow | None:
        # One statement on a connection bound to the agent's role (a session start reads
        # this): one round trip, where a transaction of its own took five.
        known_version = self._newest.get(agent_id)
        known = self._rows.get((agent_id, known_version)) if known_version else None
        async with bound_acting_for(engine_of(self._sessionmaker), agent_id) as db:
            found = await agent_rows.newest_version(db, agent_id, known)
        if found is None:
            self._newest.pop(agent_id, None)
            return None
        self._remember(found)
        self._newest[agent_id] = found.version  # the newest now, even if lower (erased)
        return found

    def spec(self, row: AgentVersionRow) -> AgentSpec:
        """The row's definition, validated once per version."""
        key = (row.agent_id, row.version)
        found = self._specs.get(key)
        if found is None:
            found = self._specs[key] = AgentSpec.model_validate(row.spec)
        return found

    async def catalog(self, agent_id: str, version: int) -> dict[str, ToolDescriptor]:
        """The version's tools by name; a missing version is a non-retryable error."""
        key = (agent_id, version)
        found = self._catalogs.get(key)
        if found is None:
            row = await self.get(agent_id, version)
            if row is None:
                raise missing_version(agent_id, version)
            found = {t["name"]: ToolDescriptor.model_validate(t) for t in row.tools}
            self._catalogs[key] = found
        return found

    async def mcp_server(self, agent_id: str, version: int, name: str) -> McpServerSpec | None:
        """The MCP server ``name`` of a version (its command or URL, credential name)."""
        row = await self.get(agent_id, version)
        if row is None:
            raise missing_version(agent_id, version)
        servers = row.spec.get("mcp_servers") or []
        found = next((s for s in servers if isinstance(s, dict) and s.get("name") == name), None)
        return McpServerSpec.model_validate(found) if found is not None else None

    def _forget(self, key: tuple[str, int]) -> None:
        """Drop what is kept of a version the record no longer has (erased)."""
        self._rows.pop(key, None)
        self._catalogs.pop(key, None)
        self._specs.pop(key, None)
        if self._newest.get(key[0]) == key[1]:
            del self._newest[key[0]]

    def _remember(self, row: AgentVersionRow) -> None:
        key = (row.agent_id, row.version)
        held = self._rows.get(key)
        if held is not None and held.content_hash != row.content_hash:
            # The agent was erased and defined again: what was derived from the old
            # definition under this version number is not this one's.
            self._catalogs.pop(key, None)
            self._specs.pop(key, None)
        self._rows[key] = row
        self._rows.move_to_end(key)
        if row.version > self._newest.get(row.agent_id, 0):
            self._newest[row.agent_id] = row.version
        while len(self._rows) > CACHE_SIZE:
            self._forget(next(iter(self._rows)))


def missing_version(agent_id: str, version: int) -> ApplicationError:
    note = f" ({AGENT_VERSIONS})" if agent_version_error(version) is not None else ""
    return ApplicationError(
        f"agent {agent_id!r} has no version {version}{note}",
        type=names.ERR_AGENT_VERSION_MISSING,
        non_retryable=True,
        # The workflow handles it (a redirect to it is refused and recorded): the worker's
        # log need not carry its traceback.
        category=ApplicationErrorCategory.BENIGN,
    )


WebhookEvents = Callable[[str, int | None, AgentSpec | None], Awaitable[list[str]]]
"""(agent, version, its spec) -> the events its webhooks listen to."""


class AgentActivities:
    """The activity that pins a session to an agent version; built by the worker."""

    def __init__(
        self, versions: AgentVersions, webhook_events: WebhookEvents | None = None
    ) -> None:
        self.versions = versions
        self.webhook_events = webhook_events

    def all(self) -> list[Callable[..., Any]]:
        return [self.resolve_agent]

    @activity.defn(name=names.ACT_RESOLVE_AGENT)
    async def resolve_agent(self, arg: ResolveAgentInput) -> AgentRuntime:
        """The pinned version, or the newest; AgentRuntime(version=None) when the agent
        has no definition (vigil's built-in tools, the worker's default model)."""
        if arg.version is not None:
            row = await self.versions.get(arg.agent_id, arg.version, fresh=True)
            if row is None:
                raise missing_version(arg.agent_id, arg.version)
        else:
            row = await self.versions.newest(arg.agent_id)
            if row is None:
                return AgentRuntime(
                    agent_id=arg.agent_id,
                    version=None,
                    webhook_events=await self._webhook_events(arg.agent_id, None, None),
                )
        spec = self.versions.spec(row)
        catalog = await self.versions.catalog(row.agent_id, row.version)
        # The catalog holds the row's tools in their order, validated once (names are
        # unique in a version: a tool listed twice is refused when it is applied).
        tools = list(catalog.values()) if len(catalog) == len(row.tools) else None
        runtime = build_runtime(row, arg.goal, spec, tools)
        runtime.webhook_events = await self._webhook_events(row.agent_id, row.version, spec)
        return runtime

    async def _webhook_events(
        self, agent_id: str, version: int | None, spec: AgentSpec | None
    ) -> list[str] | None:
        if self.webhook_events is None:
            return None
        return await self.webhook_events(agent_id, version, spec) or None
