"""Starting a session: its id, its input and start options, the agent's definition it
starts with, and what a starter who may not change that definition may not loosen.

Part of VigilClient (workers/client.py).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from vigil.schema import names
from vigil.schema.limits import session_input_error, start_error
from vigil.schema.payloads import (
    Budget,
    SessionStatus,
    StartSessionInput,
    ToolPolicy,
    bounded_preview,
)
from vigil.schema.tools import BUILTIN_TOOLS, needs_approval
from vigil.workers.client_core import _VigilClientCore
from vigil.workers.client_errors import BadArgument, Forbidden, SessionIdTaken, UnknownAgent
from vigil.workers.client_views import StartedSession
from vigil.workers.telemetry import session_scope

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start.
    from temporalio.client import WorkflowExecutionDescription

    from vigil.schema.agents import ToolDescriptor
    from vigil.workers.agents import AgentVersionInfo


def refuse_unknown_tools(
    agent_id: str, policy: ToolPolicy | None, found: AgentVersionInfo | None
) -> None:
    """A policy's list of tools naming one the agent does not have: an allowed-tools list
    would silently deny it, an approval list (which replaces the definition's rules)
    silently leave every tool unasked."""
    if policy is None:
        return
    offered = [t.name for t in found.tools] if found is not None else sorted(BUILTIN_TOOLS)
    for what, listed in (
        ("allowed tools", policy.allowed),
        ("tools to approve", policy.require_approval),
    ):
        unknown = [name for name in listed or () if name not in offered]
        if unknown:
            raise BadArgument(
                f"{what} name {', '.join(map(repr, unknown))}, which agent {agent_id!r} "
                f"does not have; its tools: {', '.join(offered) or 'none'}"
            )


def _gated(tool: ToolDescriptor) -> bool:
    """Whether the definition has calls of ``tool`` wait for a person, at least some of
    them (as the session decides: workflows/agents.py ``needs_approval``)."""
    if tool.approve_when:  # a call that meets a rule waits whatever `approval` says
        return True
    if tool.approval != "auto":
        return tool.approval == "always"
    return tool.effects == "external"


def _keep_approval_gates(
    agent_id: str, require_approval: list[str] | None, found: AgentVersionInfo | None
) -> None:
    """A starter's approval list replaces the definition's approval rules for the session;
    a tool the definition has wait for a person (``approval = "always"``, ``approve_when``
    rules, or ``auto`` with external effects) may be left out of it only by whoever may
    change the definition. An agent without a definition runs the built-in tools under
    the default policy, whose gates (the tools with external effects or risks) are kept
    the same way."""
    if require_approval is None:
        return
    if found is None:
        gated = [name for name in BUILTIN_TOOLS if needs_approval(name, None)]
    else:
        gated = [t.name for t in found.tools if _gated(t)]
    missing = sorted(name for name in gated if name not in require_approval)
    if missing:
        raise Forbidden(
            f"agent {agent_id!r} has {', '.join(missing)} wait for a person's approval; "
            "approve_tools must keep them (only an admin token may start without them)"
        )


_LIMITS = ("max_steps", "max_tokens", "max_cost_usd", "max_seconds")
"""The budget's limits a starter may set (a lower value narrows the session)."""


def _raised_limits(agent_id: str, given: Budget | None, defined: Budget) -> list[str]:
    """Each limit ``given`` sets above the definition's (or lifts where it has one)."""
    out = []
    for name in _LIMITS:
        if given is None or name not in given.model_fields_set:
            continue
        mine, theirs = getattr(given, name), getattr(defined, name)
        if theirs is not None and (mine is None or mine > theirs):
            out.append(f"budget.{name}: {mine} is over {theirs}, the limit of agent {agent_id!r}")
    return out


def first_attributes(agent_id: str, goal: str) -> list[SearchAttributePair[Any]]:
    """The search attributes a session's start sets: what its first run would set itself
    (agent, status, step, goal as the workflow previews it), so that run sets none of them
    again (``vigil-start-attributes``)."""
    return [
        SearchAttributePair(names.SA_AGENT, agent_id),
        SearchAttributePair(names.SA_STATUS, SessionStatus.RUNNING.value),
        SearchAttributePair(names.SA_STEP, 0),
        SearchAttributePair(names.SA_GOAL, bounded_preview(goal)),
    ]


MEMO_GOAL_BYTES = 1200
"""The goal's part of a session's memo (Temporal warns of a memo past 2 KiB; it is sealed
by the codec, which adds to it)."""


class SessionStart(_VigilClientCore):
    """Starting sessions (a layer of VigilClient)."""

    # --- sessions ---------------------------------------------------------------------

    def ui_base(self) -> str | None:
        """Temporal UI's base URL: configured, or the embedded dev server's when
        TEMPORAL_ADDRESS names that server (as the test stack and scripts do). Found once
        per client, like its endpoints."""
        return self._ui_base

    @functools.cached_property
    def _ui_base(self) -> str | None:
        endpoints = self.endpoints()
        if endpoints.temporal_ui is not None:
            return endpoints.temporal_ui
        info = self.settings.stack_info()
        port = self.settings.temporal_port
        embedded = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if info is not None and info.temporal_address:
            embedded.add(info.temporal_address)
        if endpoints.temporal_address in embedded:
            return f"http://127.0.0.1:{self.settings.temporal_ui_port}"
        return None

    def ui_link(self, session_id: str) -> str | None:
        ui = self.ui_base()
        if ui is None:
            return None
        ns = quote(self.settings.temporal_namespace, safe="")
        return f"{ui}/namespaces/{ns}/workflows/{quote(session_id, safe='')}"

    def new_session_id(self, agent_id: str) -> str:
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in agent_id)[:60]
        return f"{slug}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    async def start_session(
        self,
        agent_id: str,
        goal: str,
        *,
        session_id: str | None = None,
        budget: Budget | None = None,
        policy: ToolPolicy | None = None,
        system_prompt: str | None = None,
        task_queue: str | None = None,
        agent_version: int | None = None,
        allow_undefined: bool | None = None,
        may_loosen: bool = True,
        own_form: bool = False,
        sees_agent: Callable[[str], bool] | None = None,
        **extra: Any,
    ) -> StartedSession:
        """Start a session of ``agent_id``'s definition (its newest version, or
        ``agent_version``); the settings given here override the definition's. An agent
        with no definition is refused unless ``allow_undefined`` (or the setting).
        ``may_loosen`` False (an API token below admin): settings that loosen the
        definition are refused (:class:`Forbidden`). A chosen ``session_id`` is checked as
        ``inputs.check_session_id`` says, except with ``own_form``: vigil's own start of a
        trigger's or a key's session, whose id vigil made (a key's may hold any letter).
        ``sees_agent``: whether the caller may know of an agent (an API token's agents;
        None: every agent), for :meth:`require_agent`."""
        from vigil.workers.inputs import check_session_id  # inputs imports the client

        if not own_form:
            check_session_id(session_id)
        elif session_id is not None and "\x00" in session_id:
            raise BadArgument("a session id must not contain NUL characters")
        arg = self.start_input(
            agent_id,
            goal,
            budget=budget,
            policy=policy,
            system_prompt=system_prompt,
            agent_version=agent_version,
            **extra,
        )
        found = await self.require_agent(
            agent_id, agent_version, allow_undefined, sees_agent=sees_agent
        )
        refuse_unknown_tools(agent_id, policy, found)
        if not may_loosen:
            self.refuse_loosening(agent_id, found, policy, budget, system_prompt)
            if agent_version is not None:
                await self.refuse_older_version(agent_id, found)
        arg.runtime = await self.resolved_runtime(agent_id, goal, found)
        sid = session_id or self.new_session_id(agent_id)
        if session_id is not None:
            from vigil.activities.record import store as record

            # A session id names one session for good: a new run under an ended session's
            # id would append to that session's record as if it were the same session.
            async with self.db() as db:
                taken = await record.get_session(db, session_id)
            if taken is not None:
                raise SessionIdTaken(session_id, agent_id=taken.agent_id, status=taken.status)
        try:
            with session_scope(sid, agent_id):
                await self.temporal.start_workflow(
                    names.WORKFLOW_SESSION,
                    arg,
                    id=sid,
                    task_queue=task_queue or self.settings.task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    **self.start_options(agent_id, goal),
                )
        except WorkflowAlreadyStartedError as exc:
            # The run holding the id may be one an erasure asked Temporal to delete.
            try:
                held = await self.temporal.get_workflow_handle(sid).describe()
            except RPCError:
                raise SessionIdTaken(sid) from exc
            raise SessionIdTaken(
                sid,
                agent_id=held.typed_search_attributes.get(names.SA_AGENT),
                erased=await self._erased(sid, held),
            ) from exc
        return StartedSession(sid, self.ui_link(sid))

    async def _erased(self, session_id: str, desc: WorkflowExecutionDescription) -> bool:
        """Whether this run of the session was erased (the session, or its agent)."""
        from vigil.activities.record import erasure

        agent = desc.typed_search_attributes.get(names.SA_AGENT)
        # The run's start is Temporal's clock, the receipt's PostgreSQL's: a minute's margin.
        since = desc.start_time - timedelta(minutes=1)
        async with self.db() as db:
            return await erasure.erased_since(db, session_id, agent, since)

    async def resolved_runtime(
        self, agent_id: str, goal: str, found: AgentVersionInfo | None
    ) -> dict[str, Any]:
        """What the session's first run would resolve itself (``vigil.resolve_agent``),
        from the definition this start read already plus the agent's webhooks: the start
        input carries it and the session skips that local activity."""
        from vigil.activities.agents.runtime import AgentVersions, runtime_of
        from vigil.activities.hooks.delivery import WebhookTargets
        from vigil.schema.agents import AgentRuntime

        targets = WebhookTargets(self.db, AgentVersions(self.db))
        if found is None:
            runtime = AgentRuntime(agent_id=agent_id, version=None)
            runtime.webhook_events = await targets.events(agent_id, None, None) or None
        else:
            runtime = runtime_of(
                found.name, found.version, found.content_hash, found.spec, found.tools, goal
            )
            runtime.webhook_events = (
                await targets.events(found.name, found.version, found.spec) or None
            )
        return runtime.model_dump(mode="json")

    def start_options(self, agent_id: str, goal: str) -> dict[str, Any]:
        """What every session's start carries besides its input: memo, search attributes
        and the UI's summary (update-with-start passes them too: workers/keyed.py)."""
        return {
            # Temporal warns of a memo past 2 KiB: the record keeps the goal whole.
            "memo": {"goal": bounded_preview(goal, max_json=MEMO_GOAL_BYTES), "agent": agent_id},
            "search_attributes": TypedSearchAttributes(first_attributes(agent_id, goal)),
            "static_summary": f"{agent_id}: {goal[:200]}",
        }

    def start_input(
        self,
        agent_id: str,
        goal: str,
        *,
        budget: Budget | None = None,
        policy: ToolPolicy | None = None,
        system_prompt: str | None = None,
        agent_version: int | None = None,
        **extra: Any,
    ) -> StartSessionInput:
        """A session's start input; the settings given override the agent definition's."""
        from vigil.workers.agents import start_overrides

        unknown = sorted(set(extra) - set(StartSessionInput.model_fields))
        if unknown:
            # A start input drops what it does not know: a misspelt budget or policy would
            # start a session without it.
            raise TypeError(
                f"unknown session settings: {', '.join(unknown)} (a budget goes in "
                "budget=Budget(...), tool rules in policy=ToolPolicy(...))"
            )
        too_big = start_error(goal, system_prompt)
        if too_big is not None:
            raise BadArgument(f"refused before sending: {too_big}")
        extra.setdefault("temporal_address", self.endpoints().temporal_address)
        arg = StartSessionInput(
            agent_id=agent_id,
            goal=goal,
            system_prompt=system_prompt,
            budget=budget or Budget(),
            policy=policy or ToolPolicy(),
            agent_version=agent_version,
            overrides=start_overrides(budget, policy, system_prompt, set(extra)),
            **extra,
        )
        out_of_range = session_input_error(arg, datetime.now(UTC))
        if out_of_range is not None:
            raise BadArgument(f"refused before sending: {out_of_range}")
        return arg

    def refuse_loosening(
        self,
        agent_id: str,
        found: AgentVersionInfo | None,
        policy: ToolPolicy | None,
        budget: Budget | None = None,
        system_prompt: str | None = None,
    ) -> None:
        """For a starter who may not change the definition ``found`` (an API token below
        admin): :class:`Forbidden` when the start's settings loosen what it holds."""
        _keep_approval_gates(
            agent_id, policy.require_approval if policy is not None else None, found
        )
        if found is None:
            return
        loosened = []
        if system_prompt is not None and found.spec.system_prompt is not None:
            loosened.append(f"system_prompt: agent {agent_id!r} defines its system prompt")
        loosened.extend(_raised_limits(agent_id, budget, found.spec.budget))
        if loosened:
            raise Forbidden(
                "; ".join(loosened) + " (only an admin token may loosen an agent's "
                "definition at start; lowering a limit is anyone's)"
            )

    async def refuse_older_version(self, agent_id: str, found: AgentVersionInfo | None) -> None:
        """For a caller who may not change the definition (an API token below admin):
        :class:`Forbidden` when ``found``, the version it chose, is not the agent's newest.
        An older version may hold looser rules (a tool without the approval a later
        version added, higher limits), and the start's own checks compare with the
        version chosen, so choosing one is an admin's call."""
        if found is None:
            return
        newest = await self.require_agent(agent_id, None, allow_undefined=True)
        if newest is not None and newest.version != found.version:
            raise Forbidden(
                f"agent_version: {found.version} is not the newest version "
                f"({newest.version}) of agent {agent_id!r}; only an admin token may choose an "
                "older one (it may hold looser rules than the newest)"
            )

    async def require_agent(
        self,
        agent_id: str,
        version: int | None = None,
        allow_undefined: bool | None = None,
        *,
        sees_agent: Callable[[str], bool] | None = None,
    ) -> AgentVersionInfo | None:
        """The definition a session would start with (None: an undefined agent, allowed).
        BadArgument for a version no definition can have (as the API's 422), and for a
        new undefined agent that reads as one the caller may know of (``sees_agent``:
        None, every agent)."""
        from vigil.activities.record import agents as agent_rows
        from vigil.workers.agents import AgentError, AgentService, BadAgentVersion, KnownVersions

        if (why := await agent_rows.new_agent_id_problem(self.db, agent_id)) is not None:
            # No definition has such a name: an undefined agent's session under it would
            # read as another agent's wherever it is shown (a NUL one could not even be
            # recorded).
            raise BadArgument(why)
        allow = self.settings.allow_undefined_agents if allow_undefined is None else allow_undefined
        if self._versions is None:
            self._versions = KnownVersions(self.db)
        try:
            found = await AgentService(self.db, known=self._versions).require_startable(
                agent_id, version, allow_undefined=allow
            )
        except BadAgentVersion as exc:
            raise BadArgument(str(exc)) from None
        except AgentError as exc:
            raise UnknownAgent(str(exc)) from None
        if found is None:
            await self._refuse_lookalike(agent_id, sees_agent)
        return found

    async def _refuse_lookalike(
        self, agent_id: str, sees_agent: Callable[[str], bool] | None
    ) -> None:
        """BadArgument for an undefined agent the record does not know that reads as one it
        does (``Ops`` for ``ops``, a Cyrillic letter for a Latin one): its sessions would
        look like the other agent's everywhere they are listed. A definition of it says
        the id is meant. A token that may not know of the agent it reads as is told
        nothing of it (and its own agent's sessions start): a token made for the
        look-alike on purpose (``--allow-unknown-agent``) names only that one."""
        from vigil.activities.record.agents import agent_known
        from vigil.workers.tokens import unknown_agents

        if await agent_known(self.db, agent_id):
            return  # one read; the whole list of agents only for a new id
        for unknown in await unknown_agents(self.db, [agent_id]):
            if unknown.like is not None and (sees_agent is None or sees_agent(unknown.like)):
                raise BadArgument(
                    f"{unknown.describe()} (an agent without a definition that reads as "
                    "another is refused: to use this id on purpose, define the agent first, "
                    "`vigil agent apply`)"
                )
