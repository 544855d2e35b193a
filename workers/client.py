"""VigilClient: the async API over the Temporal client and the PostgreSQL record.

Everything the CLI does goes through here, so scripts get the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from vigil.schema import cancel_reason, names
from vigil.schema.limits import input_error, session_input_error, start_error
from vigil.schema.payloads import (
    FINAL_STATUSES,
    Ack,
    ApproveInput,
    Budget,
    MessageInput,
    PauseInput,
    RedirectInput,
    RejectInput,
    ResumeInput,
    SessionResult,
    SessionState,
    SessionStatus,
    StartSessionInput,
    ToolPolicy,
    WakeInput,
    preview,
)
from vigil.schema.tools import BUILTIN_TOOLS
from vigil.workers.codec import ENCODING as ENCRYPTED
from vigil.workers.codec import PayloadKeyError
from vigil.workers.liveness import (
    CONTROL_WAIT_SECONDS,
    POLLER_FRESH,
    is_unreachable,
    live_pollers,
    no_worker,
    temporal_down,
)
from vigil.workers.settings import Endpoints, Settings
from vigil.workers.telemetry import session_scope
from vigil.workers.temporal import PayloadUnreadable, connect

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start; `reconcile`'s logging
    # (structlog) would slow every command.
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession

    from vigil.activities.record import sessions as session_reads
    from vigil.activities.record import store as record
    from vigil.activities.record.archived import ArchivedTranscript
    from vigil.activities.record.feed import FeedItem
    from vigil.schema.agents import ToolDescriptor
    from vigil.workers.agents import AgentVersionInfo, KnownVersions
    from vigil.workers.feed import Feed
    from vigil.workers.reconcile import Reconciled


class VigilError(Exception):
    """A failure with a message meant for a person."""

    exit_code = 1


class NotFound(VigilError):
    """No such session or schedule."""

    exit_code = 4


class UnknownSession(NotFound):
    pass


class UnknownSchedule(NotFound):
    pass


class UnknownArtifact(NotFound):
    pass


class UnknownAgent(NotFound):
    """No definition of the agent (or not that version)."""


class NotRecordedYet(UnknownSession):
    """Temporal knows the session but its record row is not written yet."""


class Refused(VigilError):
    """The session refused a control (validator said no, or it has ended)."""

    exit_code = 2


class BadArgument(VigilError):
    """An argument the caller can fix (a format, a policy name, a taken id)."""

    exit_code = 2


class Forbidden(VigilError):
    """The caller may not do this: a start that would loosen what the agent's definition
    holds, asked by someone who may not change the definition (an API control token)."""

    exit_code = 2


class SessionIdTaken(BadArgument):
    """The id already names a session (of any agent: ids are one namespace). ``agent_id``
    and ``status`` are those of the session holding it, when its record is there; a face
    shows them only to a caller who may read that session (:meth:`message`)."""

    def __init__(
        self, session_id: str, *, agent_id: str | None = None, status: str | None = None
    ) -> None:
        self.session_id = session_id
        self.agent_id = agent_id
        self.status = status
        super().__init__(self.message(reveal=True, option="--id"))

    def message(self, *, reveal: bool, option: str = "id") -> str:
        held = f" ({self.status})" if reveal and self.status else ""
        return (
            f"a session with id {self.session_id!r} already exists{held}; choose another {option}"
        )


def refuse_oversized(value: BaseModel) -> None:
    """Refuse a control payload over the session's own limits before it is sent: Temporal
    would write it into the session's history even though the session refuses it."""
    error = input_error(value)
    if error is not None:
        raise BadArgument(f"refused before sending: {error}")


class PayloadKeysMissing(VigilError):
    """What a session answered is encrypted with a key this client does not have: what it
    asked may have been taken (the answer says, and cannot be read here)."""

    exit_code = 1


class Unreachable(VigilError):
    exit_code = 3


class NotTakenYet(Unreachable):
    """Temporal runs the session and lists a worker on its queue, but none has taken it
    (a worker that stopped is still listed for a while)."""


class NoWorker(Unreachable):
    """Temporal knows the session, but no worker polls its task queue: nothing will move."""


@dataclass(frozen=True)
class StartedSession:
    id: str
    ui_url: str | None


@dataclass(frozen=True)
class SessionSummary:
    id: str
    agent_id: str
    goal: str
    status: str
    step: int
    created_at: datetime
    updated_at: datetime
    schedule_id: str | None
    temporal_status: str | None
    recorded: bool = True
    """False for a session Temporal knows whose record row is not written yet (its status
    then reads ``unrecorded``): usually no worker has picked it up."""


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionSummary]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; None when this page is the last."""


@dataclass(frozen=True)
class SessionView:
    session: record.SessionRow
    state: SessionState | None
    """The live state; None when the session has ended or no worker answered in time."""
    messages: list[record.StoredMessage]
    ui: str | None
    state_unavailable: str | None = None
    """Why there is no live state for a running session (no worker, Temporal down)."""
    archived: ArchivedTranscript | None = None
    """Where the transcript went when it was archived and pruned (``messages`` is empty)."""
    retrying: list[str] = field(default_factory=list)
    """The calls Temporal is trying again for a running session, each with its attempt and
    what the last one met (a part away, a worker that cannot serve it): why it waits."""


STATUSES = frozenset(s.value for s in SessionStatus)
RUNNING_STATUSES = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)
"""Temporal's statuses of a session that still runs."""


def retried_calls(desc: Any) -> list[str]:
    """The calls of a described session that failed and wait for another attempt, each
    with its attempt and what the last one met (why the session does not move)."""
    return [
        f"{p.activity_type.name} attempt {p.attempt}: {p.last_failure.message}"
        for p in desc.raw_description.pending_activities
        if p.attempt > 1 and p.last_failure.message
    ]


def said_status(status: WorkflowExecutionStatus) -> str:
    """Temporal's status of a closed session in the record's words (`cancelled`)."""
    word = status.name.lower()
    return SessionStatus.CANCELLED.value if word == "canceled" else word


UNRECORDED = "unrecorded"
"""The status `list` shows for a session Temporal runs that has no record row yet."""
STATE_QUERY_SECONDS = 10.0


@dataclass(frozen=True)
class HistoryLine:
    event_id: int
    time: datetime
    kind: str
    detail: str


LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker a local activity leaves in history (its data names the activity type)."""


def local_activity_data(event: Any) -> dict[str, Any] | None:
    """What a local activity's marker says of it (``activity_type``, ``attempt``, ...);
    None for any other event, or a marker whose data cannot be read. The marker holds no
    input: only this, the result and the summary."""
    if not event.HasField("marker_recorded_event_attributes"):
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    payloads = marker.details["data"].payloads
    try:
        data = json.loads(payloads[0].data) if payloads else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def local_activity_type(event: Any) -> str:
    """The activity type a local activity's marker names ("" for any other event)."""
    kind = (local_activity_data(event) or {}).get("activity_type")
    return kind if isinstance(kind, str) else ""


CRON_MEMO = "vigil.cron"
"""The schedule memo key holding its cron expression as given."""

MEMORY_KINDS = ("fact", "reflection", "lesson")
"""The kinds of memory the extractor writes and recall weighs (as in the remember tool)."""

OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


def _spec_text(cron: str | None, every: timedelta | None, time_zone: str | None) -> str:
    """When a schedule runs, as a person reads it: its cron line or its interval."""
    if cron:
        return f"cron {cron}" + (f" ({time_zone})" if time_zone else "")
    if every is not None:
        seconds = int(every.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"every {seconds // size}{unit}"
        return f"every {seconds}s"
    return "calendar"


def next_runs(desc: ScheduleDescription) -> list[datetime]:
    """When a schedule runs next: none while it is paused (Temporal still lists the times
    it would run at)."""
    return [] if desc.schedule.state.paused else list(desc.info.next_action_times)


def _refuse_unknown_tools(
    agent_id: str, allowed: list[str], found: AgentVersionInfo | None
) -> None:
    """An allowed-tools list naming a tool the agent does not have would silently deny it."""
    offered = [t.name for t in found.tools] if found is not None else sorted(BUILTIN_TOOLS)
    unknown = [name for name in allowed if name not in offered]
    if unknown:
        raise BadArgument(
            f"allowed tools name {', '.join(map(repr, unknown))}, which agent {agent_id!r} "
            f"does not have; its tools: {', '.join(offered) or 'none'}"
        )


def _gated(tool: ToolDescriptor) -> bool:
    """Whether the definition has calls of ``tool`` wait for a person, at least some of
    them (as the session decides: workflows/agents.py ``needs_approval``)."""
    if tool.approval != "auto":
        return tool.approval == "always"
    return bool(tool.approve_when) or tool.effects == "external"


def _keep_approval_gates(
    agent_id: str, require_approval: list[str] | None, found: AgentVersionInfo | None
) -> None:
    """A starter's approval list replaces the definition's approval rules for the session;
    a tool the definition has wait for a person (``approval = "always"``, or ``auto`` with
    external effects or ``approve_when`` rules) may be left out of it only by whoever may
    change the definition."""
    if require_approval is None or found is None:
        return
    missing = sorted(t.name for t in found.tools if _gated(t) and t.name not in require_approval)
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
            out.append(f"budget.{name}: {mine} is over agent {agent_id!r}'s {theirs}")
    return out


def first_attributes(agent_id: str, goal: str) -> list[SearchAttributePair[Any]]:
    """The search attributes a session's start sets: what its first run would set itself
    (agent, status, step, goal as the workflow previews it), so that run sets none of them
    again (``vigil-start-attributes``)."""
    return [
        SearchAttributePair(names.SA_AGENT, agent_id),
        SearchAttributePair(names.SA_STATUS, SessionStatus.RUNNING.value),
        SearchAttributePair(names.SA_STEP, 0),
        SearchAttributePair(names.SA_GOAL, preview(goal, 1000)),
    ]


class _VigilClientCore:
    def __init__(
        self, settings: Settings, temporal: Client, engine: AsyncEngine | None = None
    ) -> None:
        self.settings = settings
        self.temporal = temporal
        self._engine = engine
        self._db: async_sessionmaker[DbSession] | None = None
        self._agents: dict[str, str] = {}
        self._feed: Feed | None = None
        self._feed_lock = asyncio.Lock()
        self._endpoints: Endpoints | None = None
        self._versions: KnownVersions | None = None

    def endpoints(self) -> Endpoints:
        """The settings' endpoints, read once per client: each read opens the stack's
        state file, and every start wants them (a running API starts many)."""
        if self._endpoints is None:
            self._endpoints = self.settings.endpoints()
        return self._endpoints

    @classmethod
    async def connect(cls, settings: Settings) -> _VigilClientCore:
        """A client whose Temporal connection is made on first use: commands that need only
        PostgreSQL (show, export, search, memory, artifacts) work while Temporal is down."""
        endpoints = settings.endpoints()
        try:
            temporal = await connect(settings, lazy=True)
        except PayloadKeyError as exc:
            raise BadArgument(f"bad configuration: {exc}") from exc
        except Exception as exc:
            raise Unreachable(temporal_down(endpoints.temporal_address)) from exc
        if endpoints.database_url is None:
            raise Unreachable(settings.no_database())
        return cls(settings, temporal)

    @property
    def engine(self) -> AsyncEngine:
        """The record's engine, made on first use (a control command never needs it)."""
        if self._engine is None:
            from vigil.workers.db import make_engine

            url = self.settings.endpoints().database_url
            if url is None:
                raise Unreachable(self.settings.no_database())
            self._engine = make_engine(url, pool_size=4)
        return self._engine

    @property
    def db(self) -> async_sessionmaker[DbSession]:
        if self._db is None:
            from vigil.workers.db import make_sessionmaker

            self._db = make_sessionmaker(self.engine)
        return self._db

    async def close(self) -> None:
        if self._feed is not None:
            await self._feed.close()
        if self._engine is not None:
            await self._engine.dispose()

    async def live_feed(self) -> Feed:
        """This process's live feed (workers/feed.py): one LISTEN connection, started on
        first use and shared by every follower."""
        async with self._feed_lock:
            if self._feed is None:
                url = self.settings.endpoints().database_url
                if url is None:
                    raise Unreachable(self.settings.no_database())
                from vigil.workers.feed import Feed

                try:
                    self._feed = await Feed(url, self.db).start()
                except Exception as exc:  # refused, unreachable, bad credentials
                    raise Unreachable(f"cannot listen to the record: {exc}") from exc
            return self._feed

    async def __aenter__(self) -> _VigilClientCore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def temporal_down(self) -> str:
        return temporal_down(self.settings.endpoints().temporal_address)

    @contextlib.asynccontextmanager
    async def plain_errors(self) -> AsyncIterator[None]:
        """Turn "Temporal is not there" raised anywhere inside (this client, or code using
        ``client.temporal`` directly) into one whole line a person can act on."""
        try:
            yield
        except VigilError:
            raise
        except Exception as exc:
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise

    # --- workers ----------------------------------------------------------------------

    async def pollers(self, task_queue: str | None = None) -> list[str]:
        """Identities of the workers polling ``task_queue`` (the configured one by default)."""
        async with self.plain_errors():
            return await live_pollers(self.temporal, task_queue or self.settings.task_queue)

    async def require_worker(self, task_queue: str, *, what: str) -> None:
        """Raise NoWorker (with the command that starts one) when nobody polls the queue."""
        if not await self.pollers(task_queue):
            raise NoWorker(no_worker(task_queue, self.settings.task_queue, what=what))

    async def _describe_live(self, session_id: str, *, what: str) -> Any:
        """Describe the session and, when it runs, make sure a worker polls its task queue,
        so what follows never waits for a worker that is not there."""
        desc = await self._rpc(session_id, self.handle(session_id).describe())
        if desc.status == WorkflowExecutionStatus.RUNNING:
            await self.require_worker(desc.task_queue, what=what.format(id=session_id))
        return desc

    async def _bounded(self, session_id: str, coro: Awaitable[Any], what: str) -> Any:
        """A control or a query, bounded: a worker that polls but does not answer (busy,
        stuck) is reported instead of waited for without end."""
        try:
            return await asyncio.wait_for(self._rpc(session_id, coro), CONTROL_WAIT_SECONDS)
        except TimeoutError:
            raise Unreachable(
                f"session {session_id} did not answer the {what} within "
                f"{CONTROL_WAIT_SECONDS:.0f} s although a worker polls its queue; "
                "it may be busy: try again, or send it with --signal"
            ) from None

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
        **extra: Any,
    ) -> StartedSession:
        """Start a session of ``agent_id``'s definition (its newest version, or
        ``agent_version``); the settings given here override the definition's. An agent
        with no definition is refused unless ``allow_undefined`` (or the setting).
        ``may_loosen`` False (an API token below admin): settings that loosen the
        definition are refused (:class:`Forbidden`)."""
        arg = self.start_input(
            agent_id,
            goal,
            budget=budget,
            policy=policy,
            system_prompt=system_prompt,
            agent_version=agent_version,
            **extra,
        )
        found = await self.require_agent(agent_id, agent_version, allow_undefined)
        if policy is not None and policy.allowed:
            _refuse_unknown_tools(agent_id, policy.allowed, found)
        if not may_loosen:
            self.refuse_loosening(agent_id, found, policy, budget, system_prompt)
        arg.runtime = await self.resolved_runtime(agent_id, goal, found)
        sid = session_id or self.new_session_id(agent_id)
        if session_id is not None and "\x00" in session_id:
            raise BadArgument("a session id must not contain NUL characters")
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
            raise SessionIdTaken(sid) from exc
        return StartedSession(sid, self.ui_link(sid))

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
            "memo": {"goal": goal, "agent": agent_id},
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

    async def require_agent(
        self, agent_id: str, version: int | None = None, allow_undefined: bool | None = None
    ) -> AgentVersionInfo | None:
        """The definition a session would start with (None: an undefined agent, allowed)."""
        from vigil.workers.agents import AgentError, AgentService, KnownVersions

        allow = self.settings.allow_undefined_agents if allow_undefined is None else allow_undefined
        if self._versions is None:
            self._versions = KnownVersions(self.db)
        try:
            return await AgentService(self.db, known=self._versions).require_startable(
                agent_id, version, allow_undefined=allow
            )
        except AgentError as exc:
            raise UnknownAgent(str(exc)) from None

    def handle(self, session_id: str) -> WorkflowHandle[Any, Any]:
        return self.temporal.get_workflow_handle(session_id)

    async def _rpc(self, session_id: str, coro: Any) -> Any:
        try:
            return await coro
        except RuntimeError as exc:
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                # Temporal says NOT_FOUND for an id it never saw, for a control sent to a
                # session that has ended, and for an update it held for the worker while
                # the session closed: the record, then Temporal, tell them apart.
                status = await self.temporal_status(session_id)
                if status in RUNNING_STATUSES:
                    # It runs (a request that met a hand-over to the session's next run,
                    # say): nothing was taken; Temporal's words, and that it may be resent.
                    raise Refused(
                        f"session {session_id} did not take it ({exc.message}); send it again"
                    ) from exc
                ended = await self._ended(session_id, status)
                if ended is None:
                    raise UnknownSession(f"no session with id {session_id!r}") from exc
                raise Refused(
                    f"refused by session {session_id}: the session has ended ({ended})"
                ) from exc
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            raise VigilError(f"Temporal refused: {exc.message}") from exc
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            raise Unreachable(
                f"session {session_id} did not answer in time (its worker may be busy or "
                "gone); Temporal may still hand it the request when a worker runs it: check "
                f"`vigil show {session_id}` before sending it again"
            ) from exc
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = getattr(cause, "message", None) or str(cause)
            raise Refused(f"refused by session {session_id}: {message}") from exc
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            raise VigilError(f"session {session_id} did not answer the query: {exc}") from exc
        except PayloadUnreadable as exc:
            raise PayloadKeysMissing(
                f"session {session_id} answered, but this client cannot read the answer (so "
                f"whether it took what was sent; `vigil show {session_id}` says): {exc}"
            ) from None

    async def call(self, session_id: str, coro: Any) -> Any:
        """Await a Temporal call about ``session_id``, its failures as VigilErrors."""
        return await self._rpc(session_id, coro)

    async def state(self, session_id: str) -> SessionState:
        desc = await self._rpc(session_id, self.handle(session_id).describe())
        return await self._state_of(session_id, desc)

    async def _state_of(self, session_id: str, desc: Any) -> SessionState:
        """The state query of the session Temporal described as ``desc``."""
        # A query is answered by a worker, even for an ended session.
        await self.require_worker(desc.task_queue, what=f"session {session_id} cannot answer")
        handle = self.handle(session_id)
        result: SessionState = await self._bounded(
            session_id, handle.query(names.QUERY_STATE, result_type=SessionState), "query"
        )
        return result

    async def _control(
        self, session_id: str, update: str, signal: str, arg: Any, wait: bool
    ) -> Ack | None:
        refuse_oversized(arg)
        handle = self.handle(session_id)
        if wait:
            # An update waits for a worker to run it: with none polling, say so at once.
            await self._describe_live(session_id, what="session {id} cannot take the " + signal)
            ack: Ack = await self._bounded(
                session_id, handle.execute_update(update, arg, result_type=Ack), signal
            )
            return ack
        await self._rpc(session_id, handle.signal(signal, arg))
        return None

    async def approve(
        self,
        session_id: str,
        approval_id: str,
        *,
        by: str,
        note: str | None = None,
        edited_arguments: dict[str, Any] | None = None,
        wait: bool = True,
        digest: str | None = None,
    ) -> Ack | None:
        arg = ApproveInput(
            approval_id=approval_id,
            by=by,
            note=note,
            edited_arguments=edited_arguments,
            digest=digest,
        )
        return await self._control(session_id, names.UPD_APPROVE, names.SIG_APPROVE, arg, wait)

    async def reject(
        self, session_id: str, approval_id: str, *, by: str, reason: str = "", wait: bool = True
    ) -> Ack | None:
        arg = RejectInput(approval_id=approval_id, by=by, reason=reason)
        return await self._control(session_id, names.UPD_REJECT, names.SIG_REJECT, arg, wait)

    async def pause(
        self, session_id: str, *, by: str, reason: str = "", wait: bool = True
    ) -> Ack | None:
        return await self._control(
            session_id, names.UPD_PAUSE, names.SIG_PAUSE, PauseInput(by=by, reason=reason), wait
        )

    async def resume(self, session_id: str, *, by: str, wait: bool = True) -> Ack | None:
        return await self._control(
            session_id, names.UPD_RESUME, names.SIG_RESUME, ResumeInput(by=by), wait
        )

    async def say(self, session_id: str, text_: str, *, by: str, wait: bool = True) -> Ack | None:
        return await self._control(
            session_id, names.UPD_MESSAGE, names.SIG_MESSAGE, MessageInput(text=text_, by=by), wait
        )

    async def redirect(
        self,
        session_id: str,
        goal: str,
        *,
        by: str,
        wait: bool = True,
        agent_version: int | None = None,
    ) -> Ack | None:
        """A new goal; with ``agent_version``, also that version of the agent's definition."""
        if agent_version is not None:
            row = await self.require_session(session_id)
            await self.require_agent(row.agent_id, agent_version, allow_undefined=False)
        return await self._control(
            session_id,
            names.UPD_REDIRECT,
            names.SIG_REDIRECT,
            RedirectInput(goal=goal, by=by, agent_version=agent_version),
            wait,
        )

    async def wake(
        self, session_id: str, *, by: str, reason: str = "", wait: bool = True
    ) -> Ack | None:
        return await self._control(
            session_id, names.UPD_WAKE, names.SIG_WAKE, WakeInput(by=by, reason=reason), wait
        )

    async def cancel(self, session_id: str, *, by: str = "", reason: str = "") -> None:
        """Temporal's cancel; who and why travel as its reason (shown in the history, and
        read back by the workflow for the session's cancel event)."""
        handle = self.handle(session_id)
        # Temporal accepts a cancel of a closed workflow without complaint; say so instead.
        desc = await self._rpc(session_id, handle.describe())
        if desc.status not in (None, WorkflowExecutionStatus.RUNNING):
            raise Refused(
                f"session {session_id!r} has already ended "
                f"({await self._ended(session_id, WorkflowExecutionStatus(desc.status))})"
            )
        if desc.raw_description.workflow_extended_info.cancel_requested:
            # Temporal takes a second cancel without complaint too: it would do nothing.
            raise Refused(
                f"session {session_id!r} is being cancelled already; it ends once a worker "
                "has written its last records"
            )
        why = cancel_reason.reason_text(by, reason)  # the workflow reads who and why back
        await self._rpc(session_id, handle.cancel(reason=why))

    async def _ended(self, session_id: str, status: WorkflowExecutionStatus | None) -> str | None:
        """How a closed session ended, as `show` says it: the record's status (a session
        that ends `failed` returns normally, so Temporal calls it completed); Temporal's
        own word (``status``), in the record's spelling, when the record has no final
        status yet (a session closed before a worker recorded its end); None when neither
        knows the session."""
        from vigil.activities.record import store as record

        async with self.db() as db:
            row = await record.get_session(db, session_id)
        if row is not None and row.status in {s.value for s in FINAL_STATUSES}:
            return str(row.status)
        if status is not None:
            return said_status(status)
        return None if row is None else "closed"

    async def result(
        self,
        session_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - public API
    ) -> SessionResult | None:
        """The session's result once it ends (None when it ended without one: cancel, failure)."""
        handle = self.temporal.get_workflow_handle(session_id, result_type=SessionResult)
        try:
            value: SessionResult = await asyncio.wait_for(
                self._rpc(session_id, handle.result()), timeout
            )
        except VigilError:
            raise
        except TimeoutError:
            raise
        except Exception:  # cancelled, failed or terminated: the record says how it ended
            return None
        return value

    async def temporal_status(self, session_id: str) -> WorkflowExecutionStatus | None:
        """Temporal's status of ``session_id``; None when Temporal has no such workflow."""
        try:
            desc = await self.handle(session_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise Unreachable(f"Temporal did not answer: {exc.message}") from exc
        return desc.status or WorkflowExecutionStatus.RUNNING

    async def status(self, session_id: str) -> str:
        """The recorded status; falls back to Temporal when the row is not there yet."""
        from vigil.activities.record import store as record

        async with self.db() as db:
            row = await record.get_session(db, session_id)
        if row is not None:
            return row.status
        desc = await self._rpc(session_id, self.handle(session_id).describe())
        return str(desc.status.name).lower() if desc.status else "unknown"

    async def require_session(self, session_id: str) -> record.SessionRow:
        from vigil.activities.record import store as record

        if "\x00" in session_id:  # PostgreSQL cannot hold it: no session has such an id
            raise UnknownSession(f"no session with id {session_id!r}")
        async with self.db() as db:
            row = await record.get_session(db, session_id)
        if row is None:
            # Started but not yet recorded? Temporal knows it, or nobody does; and with no
            # worker on its queue it never will be.
            desc = await self._describe_live(
                session_id, what="session {id} has no record and waits"
            )
            if desc.status not in RUNNING_STATUSES:
                # It ended before any worker recorded it (terminated at once, say): it
                # never will be; said at once, not waited for.
                status = said_status(desc.status) if desc.status else "ended"
                raise UnknownSession(
                    f"session {session_id!r} ended ({status}) before anything was recorded"
                )
            raise NotRecordedYet(f"session {session_id!r} has no record yet; try again shortly")
        return row

    async def require_session_soon(
        self,
        session_id: str,
        timeout: float = 15.0,  # noqa: ASYNC109 - a polling budget
    ) -> record.SessionRow:
        """Like require_session, but give a just-started session time to write its row."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                return await self.require_session(session_id)
            except NotRecordedYet:  # an id nobody knows fails at once
                if asyncio.get_running_loop().time() > deadline:
                    raise NotTakenYet(
                        f"session {session_id} is started but no worker has taken it in "
                        f"{timeout:.0f} s, although one was seen polling its task queue in "
                        f"the last {POLLER_FRESH.seconds // 60} minutes (a worker that stopped "
                        "is listed that long); it waits for one: `vigil doctor` says whether "
                        "a worker polls"
                    ) from None
                await asyncio.sleep(0.2)

    async def list_sessions(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        schedule_id: str | None = None,
        limit: int = 50,
    ) -> list[SessionSummary]:
        """At most ``limit``, newest first; sessions Temporal runs that have no record row
        yet (no worker has taken their first step) are among them, with status
        ``unrecorded``, and count against the limit."""
        if limit < 1:
            raise BadArgument(f"bad limit {limit}: must be 1 or more")
        if status == UNRECORDED:
            return (await self._unrecorded(agent, since, set()))[:limit]
        page = await self.session_page(
            agent=agent, status=status, since=since, schedule_id=schedule_id, limit=limit
        )
        if status not in (None, SessionStatus.RUNNING.value) or schedule_id is not None:
            return page.items
        unrecorded = await self._unrecorded(agent, since, {s.id for s in page.items})
        merged = sorted([*unrecorded, *page.items], key=lambda s: s.created_at, reverse=True)
        return merged[:limit]

    async def session_page(
        self,
        *,
        agent: str | None = None,
        agents: frozenset[str] | None = None,
        status: str | None = None,
        since: datetime | None = None,
        schedule_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions newest first, one page; ``next_cursor`` continues after it (stable
        while new sessions start). ``agents`` limits the list to those agents."""
        if status is not None and status not in STATUSES:
            raise BadArgument(f"unknown status {status!r}; one of {', '.join(sorted(STATUSES))}")
        for value in (agent, schedule_id, cursor):
            if value is not None and "\x00" in value:
                raise BadArgument("filters must not contain NUL characters")
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        from vigil.activities.record import sessions as session_reads

        async with self.db() as db:
            try:
                page = await session_reads.list_sessions(
                    db,
                    agent=agent,
                    agents=sorted(agents) if agents is not None else None,
                    status=status,
                    since=since,
                    schedule_id=schedule_id,
                    limit=limit,
                    cursor=cursor,
                )
            except session_reads.BadCursor as exc:
                raise BadArgument(f"cursor: {exc}") from exc
        live = await self._temporal_statuses([r.id for r in page.rows])
        items = [SessionSummary(**asdict(r), temporal_status=live.get(r.id)) for r in page.rows]
        return SessionPage(items, page.next_cursor)

    async def session_view(self, session_id: str, last: int = 20) -> SessionView:
        """A session's record, its live state (while it runs and a worker answers) and
        its ``last`` messages: what `vigil show` and the API's session page show."""
        row = await self.require_session(session_id)
        live, unavailable, retrying = None, None, []
        if row.status not in {s.value for s in FINAL_STATUSES}:
            # An ended session's query would wait for a worker; a running one's is bounded
            # and says why it has no answer (no worker, Temporal down). One description
            # serves the calls Temporal retries and the query's worker check.
            try:
                desc = await asyncio.wait_for(
                    self._rpc(session_id, self.handle(session_id).describe()),
                    STATE_QUERY_SECONDS,
                )
                retrying = retried_calls(desc)
                live = await asyncio.wait_for(self._state_of(session_id, desc), STATE_QUERY_SECONDS)
            except VigilError as exc:
                unavailable = str(exc)
            except TimeoutError:
                unavailable = f"no worker answered in {STATE_QUERY_SECONDS:.0f} s"
        from vigil.activities.record import store as record
        from vigil.activities.record.archived import archived_transcript
        from vigil.activities.record.rls import acting_for

        async with acting_for(self.db, row.agent_id) as db:
            recent = await record.recent_messages(db, session_id, max(0, last))
        return SessionView(
            row,
            live,
            recent,
            self.ui_link(session_id),
            unavailable,
            archived_transcript(row.metadata),
            retrying,
        )

    async def events_page(
        self, session_id: str, *, after: int = 0, limit: int = 100, kind: str | None = None
    ) -> list[session_reads.EventRow]:
        """A session's events after event id ``after``, oldest first."""
        from vigil.activities.record import sessions as session_reads
        from vigil.activities.record.rls import acting_for

        row = await self.require_session(session_id)
        if kind is not None and "\x00" in kind:
            raise BadArgument("kind must not contain NUL characters")
        async with acting_for(self.db, row.agent_id) as db:
            return await session_reads.events_page(
                db, session_id, after=after, limit=limit, kind=kind
            )

    async def pending_approvals(
        self,
        *,
        agent: str | None = None,
        agents: frozenset[str] | None = None,
        limit: int = 200,
        cursor: str | None = None,
    ) -> session_reads.PendingApprovalPage:
        """The approvals waiting for a person across sessions, oldest first, one page;
        ``next_cursor`` continues after it (stable while approvals are decided)."""
        from vigil.activities.record import sessions as session_reads

        for value in (agent, cursor):
            if value is not None and "\x00" in value:
                raise BadArgument("filters must not contain NUL characters")
        async with self.db() as db:
            try:
                return await session_reads.pending_approvals(
                    db,
                    agent=agent,
                    agents=sorted(agents) if agents is not None else None,
                    limit=limit,
                    cursor=cursor,
                )
            except session_reads.BadCursor as exc:
                raise BadArgument(f"cursor: {exc}") from exc

    async def _temporal_statuses(self, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        quoted = ", ".join("'" + i.replace("'", "") + "'" for i in ids[:200])
        out: dict[str, str] = {}
        try:
            async for wf in self.temporal.list_workflows(f"WorkflowId IN ({quoted})"):
                if wf.id not in out and wf.status is not None:
                    out[wf.id] = WorkflowExecutionStatus(wf.status).name.lower()
        except RPCError:
            return {}
        except RuntimeError as exc:  # Temporal is down: the record alone still lists
            if is_unreachable(exc):
                return dict.fromkeys(ids, "unreachable")
            raise
        return out

    async def _unrecorded(
        self, agent: str | None, since: datetime | None, recorded: set[str]
    ) -> list[SessionSummary]:
        """Running sessions Temporal knows whose record row is not written yet (no worker
        has run their first step): shown, so a session never seems to vanish."""
        query = (
            f"WorkflowType = '{names.WORKFLOW_SESSION}' AND ExecutionStatus = 'Running'"
            + (f" AND {names.SA_AGENT.name} = '{agent.replace(chr(39), '')}'" if agent else "")
            + (f" AND StartTime >= '{since.isoformat()}'" if since else "")
        )
        running: list[Any] = []
        try:
            async for wf in self.temporal.list_workflows(query, limit=200):
                if wf.id not in recorded:
                    running.append(wf)
        except RPCError:
            return []
        except RuntimeError as exc:
            if is_unreachable(exc):
                return []
            raise
        if running:
            from vigil.activities.record import sessions as session_reads

            async with self.db() as db:  # recorded since the page above was read?
                recorded = recorded | await session_reads.recorded_ids(db, [w.id for w in running])
        found: list[SessionSummary] = []
        for wf in running:
            if wf.id in recorded:
                continue
            attrs = wf.typed_search_attributes
            found.append(
                SessionSummary(
                    id=wf.id,
                    agent_id=attrs.get(names.SA_AGENT) or "?",
                    goal=attrs.get(names.SA_GOAL) or "",
                    status=UNRECORDED,
                    step=0,
                    created_at=wf.start_time,
                    updated_at=wf.start_time,
                    schedule_id=attrs.get(names.SA_SCHEDULE),
                    temporal_status="running",
                    recorded=False,
                )
            )
        return sorted(found, key=lambda s: s.created_at, reverse=True)

    async def agent_of(self, session_id: str) -> str | None:
        """The agent a session belongs to (remembered: a session never changes agent)."""
        agent = self._agents.get(session_id)
        if agent is None and "\x00" not in session_id:
            from vigil.activities.record import store as record

            async with self.db() as db:
                agent = await record.session_agent(db, session_id)
            if agent is not None:
                self._agents[session_id] = agent
        return agent

    async def transcript(
        self, session_id: str, *, after_seq: int = -1, limit: int = 100
    ) -> list[record.StoredMessage]:
        from vigil.activities.record import store as record
        from vigil.activities.record.rls import acting_for

        agent = await self.agent_of(session_id)
        if agent is None:
            return []
        async with acting_for(self.db, agent) as db:
            return await record.messages_page(db, session_id, after_seq=after_seq, limit=limit)

    async def follow(
        self,
        session_id: str,
        *,
        after_seq: int = -1,
        poll_seconds: float | None = None,
        on_approval: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[record.StoredMessage]:
        """New messages as they land; ends once the session has ended and all is read.

        Fed by the live feed (LISTEN/NOTIFY with catch-up from the record), not by
        polling; ``poll_seconds`` is accepted for older callers and ignored.
        ``on_approval`` is awaited when the session asks for an approval."""
        from vigil.activities.record.feed import FeedItem

        row = await self.require_session_soon(session_id)
        feed = await self.live_feed()
        async for entry in feed.follow(row.agent_id, session_id=session_id, tokens=False):
            if not isinstance(entry, FeedItem):
                continue
            if entry.message is not None and entry.message.seq > after_seq:
                yield entry.message
            elif entry.event_kind == "approval_requested" and on_approval is not None:
                await on_approval()

    async def follow_items(self, session_id: str) -> AsyncIterator[FeedItem]:
        """The session's recorded messages and events in the order they happened, from its
        start and then live; ends once the session has ended and all is read."""
        from vigil.activities.record.feed import FeedItem

        row = await self.require_session_soon(session_id)
        feed = await self.live_feed()
        async for entry in feed.follow(row.agent_id, session_id=session_id, tokens=False):
            if isinstance(entry, FeedItem):
                yield entry

    async def reconcile(self, session_ids: list[str] | None = None) -> list[Reconciled]:
        """Close sessions whose workflow ended outside vigil's control (workers/reconcile.py)."""
        from vigil.workers.reconcile import reconcile

        try:
            return await reconcile(self.temporal, self.db, session_ids=session_ids)
        except RPCError as exc:
            raise Unreachable(f"Temporal did not answer: {exc.message}") from exc

    async def events(self, session_id: str, kind: str | None = None) -> list[record.StoredEvent]:
        from vigil.activities.record import store as record
        from vigil.activities.record.rls import acting_for

        agent = await self.agent_of(session_id)
        if agent is None:
            return []
        async with acting_for(self.db, agent) as db:
            return await record.list_events(db, session_id, kind=kind)

    async def history(self, session_id: str) -> list[HistoryLine]:
        """Temporal's event history of the session, summarised one line per event."""
        handle = self.handle(session_id)
        history = await self._rpc(session_id, handle.fetch_history())
        lines: list[HistoryLine] = []
        scheduled: dict[int, str] = {}
        for ev in history.events:
            kind = EventType.Name(ev.event_type).removeprefix("EVENT_TYPE_").lower()
            detail = ""
            if ev.HasField("activity_task_scheduled_event_attributes"):
                attrs = ev.activity_task_scheduled_event_attributes
                scheduled[ev.event_id] = attrs.activity_type.name
                detail = await self._summarised(ev, attrs.activity_type.name)
            elif ev.HasField("activity_task_completed_event_attributes"):
                done_id = ev.activity_task_completed_event_attributes.scheduled_event_id
                detail = scheduled.get(done_id, "")
            elif ev.HasField("activity_task_failed_event_attributes"):
                attrs_f = ev.activity_task_failed_event_attributes
                name = scheduled.get(attrs_f.scheduled_event_id, "")
                detail = f"{name}: {attrs_f.failure.message[:120]}"
            elif local := local_activity_type(ev):
                # A local activity (the records, the agent's resolution, a low-latency
                # model call) leaves one marker: shown as what ran, with its summary.
                kind, detail = "local_activity", await self._summarised(ev, local)
                failed = ev.marker_recorded_event_attributes.failure
                if failed.message:
                    detail += f": {failed.message[:120]}"
            elif ev.HasField("workflow_execution_signaled_event_attributes"):
                signaled = ev.workflow_execution_signaled_event_attributes
                detail = signaled.signal_name + await self._sender(signaled.input.payloads)
            elif ev.HasField("workflow_execution_update_accepted_event_attributes"):
                accepted = ev.workflow_execution_update_accepted_event_attributes
                request = accepted.accepted_request.input
                detail = request.name + await self._sender(request.args.payloads)
            elif ev.HasField("workflow_execution_cancel_requested_event_attributes"):
                detail = ev.workflow_execution_cancel_requested_event_attributes.cause
            elif ev.HasField("timer_started_event_attributes"):
                secs = ev.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
                detail = await self._summarised(ev, f"timer {secs}")
            lines.append(HistoryLine(ev.event_id, ev.event_time.ToDatetime(), kind, detail))
        return lines

    async def _summarised(self, event: Any, detail: str) -> str:
        """``detail`` followed by the event's summary (as Temporal UI shows it), if any."""
        if not event.user_metadata.HasField("summary"):
            return detail
        return f"{detail} — {await self._summary_text(event.user_metadata.summary)}"

    async def _sender(self, payloads: Any) -> str:
        """`` by NAME`` for a control signal's or update's input (empty when unreadable)."""
        if len(payloads) != 1:
            return ""
        try:
            value = (await self.temporal.data_converter.decode(list(payloads), [dict]))[0]
        except Exception:  # a key we lack, not JSON: the event still has a line
            return ""
        by = value.get("by") if isinstance(value, dict) else None
        return f" by {by}" if isinstance(by, str) and by else ""

    async def _summary_text(self, payload: Any) -> str:
        """An activity summary as text (a payload: maybe encrypted, JSON-encoded)."""
        try:
            value = (await self.temporal.data_converter.decode([payload], [str]))[0]
        except Exception:  # a key we lack, or not a string payload: show the raw bytes
            if payload.metadata.get("encoding") == ENCRYPTED:
                return "(encrypted)"
            return str(payload.data.decode(errors="replace"))
        return str(value)

    # --- schedules --------------------------------------------------------------------

    async def create_schedule(
        self,
        schedule_id: str,
        template: StartSessionInput,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        time_zone: str | None = None,
        jitter: timedelta | None = None,
        overlap: str = "skip",
        catchup_window: timedelta | None = None,
        paused: bool = False,
        note: str | None = None,
    ) -> str:
        if schedule_id == names.SCHEDULE_RETENTION:
            raise BadArgument(
                f"schedule id {schedule_id!r} is vigil's own (the retention sweep, "
                "`vigil retention set`): choose another"
            )
        if (cron is None) == (every is None):
            raise BadArgument("give exactly one of a cron expression or an interval")
        if overlap not in OVERLAP:
            raise BadArgument(f"unknown overlap policy {overlap!r}; one of {', '.join(OVERLAP)}")
        # Each run pins the agent's newest version at its start, unless the template pins one.
        await self.require_agent(template.agent_id, template.agent_version)
        arg = template.model_copy(
            update={
                "schedule_id": schedule_id,
                "temporal_address": template.temporal_address or self.endpoints().temporal_address,
            }
        )
        spec = ScheduleSpec(
            cron_expressions=[cron] if cron else [],
            intervals=[ScheduleIntervalSpec(every=every)] if every else [],
            time_zone_name=time_zone,
            jitter=jitter,
        )
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                names.WORKFLOW_SESSION,
                arg,
                id=f"{schedule_id}-run",
                task_queue=self.settings.task_queue,
                typed_search_attributes=TypedSearchAttributes(
                    [
                        *first_attributes(template.agent_id, template.goal),
                        SearchAttributePair(names.SA_SCHEDULE, schedule_id),
                    ]
                ),
                memo={
                    "goal": template.goal,
                    "agent": template.agent_id,
                    "schedule": schedule_id,
                    "spec": _spec_text(cron, every, time_zone),
                },
            ),
            spec=spec,
            policy=SchedulePolicy(
                overlap=OVERLAP[overlap],
                catchup_window=catchup_window or timedelta(minutes=5),
            ),
            state=ScheduleState(paused=paused, note=note or f"vigil goal for {template.agent_id}"),
        )
        try:
            # The cron as typed: Temporal describes it back as structured calendars.
            await self.temporal.create_schedule(
                schedule_id, schedule, memo={CRON_MEMO: cron} if cron else None
            )
        except ScheduleAlreadyRunningError as exc:
            raise Refused(f"a schedule with id {schedule_id!r} already exists") from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:  # a bad cron, time zone, ...
                raise BadArgument(
                    f"could not create schedule {schedule_id!r}: {exc.message}"
                ) from exc
            raise VigilError(f"could not create schedule {schedule_id!r}: {exc.message}") from exc
        return schedule_id

    async def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule with its goal, agent, when it runs, and its next run times."""
        out: list[dict[str, Any]] = []
        async for item in await self.temporal.list_schedules():
            try:
                desc = await self.temporal.get_schedule_handle(item.id).describe()
            except RPCError:  # deleted between the listing and now
                continue
            action = desc.schedule.action
            memo: dict[str, Any] = {}
            if isinstance(action, ScheduleActionStartWorkflow) and action.memo:
                for key, raw in action.memo.items():
                    with contextlib.suppress(Exception):
                        memo[key] = (await self.temporal.data_converter.decode([raw]))[0]
            spec = desc.schedule.spec
            every = [i.every for i in spec.intervals]
            out.append(
                {
                    "id": item.id,
                    "agent": memo.get("agent"),
                    "goal": memo.get("goal"),
                    "spec": memo.get("spec")
                    or _spec_text(
                        spec.cron_expressions[0] if spec.cron_expressions else None,
                        every[0] if every else None,
                        spec.time_zone_name,
                    ),
                    "paused": desc.schedule.state.paused,
                    "next": [t.isoformat() for t in next_runs(desc)[:3]],
                    "recent": len(desc.info.recent_actions),
                }
            )
        return out

    async def _schedule(self, schedule_id: str, op: Any) -> Any:
        try:
            return await op
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise UnknownSchedule(f"no schedule with id {schedule_id!r}") from exc
            raise VigilError(f"Temporal refused: {exc.message}") from exc

    async def pause_schedule(self, schedule_id: str, note: str = "paused from vigil") -> bool:
        """Pause; False when it already was (nothing changed)."""
        desc = await self.describe_schedule(schedule_id)
        if desc.schedule.state.paused:
            return False
        await self._schedule(
            schedule_id, self.temporal.get_schedule_handle(schedule_id).pause(note=note)
        )
        return True

    async def unpause_schedule(self, schedule_id: str, note: str = "resumed from vigil") -> bool:
        """Unpause; False when it was not paused (nothing changed)."""
        desc = await self.describe_schedule(schedule_id)
        if not desc.schedule.state.paused:
            return False
        await self._schedule(
            schedule_id, self.temporal.get_schedule_handle(schedule_id).unpause(note=note)
        )
        return True

    async def trigger_schedule(self, schedule_id: str) -> str | None:
        """Ask for one run now; what keeps it from starting, when something does (a run
        that still runs, under the schedule's overlap policy), else None."""
        desc = await self.describe_schedule(schedule_id)
        await self._schedule(schedule_id, self.temporal.get_schedule_handle(schedule_id).trigger())
        running = [a.workflow_id for a in desc.info.running_actions]
        overlap = desc.schedule.policy.overlap
        if not running or overlap == ScheduleOverlapPolicy.ALLOW_ALL:
            return None
        policy = overlap.name.lower()
        outcome = {
            ScheduleOverlapPolicy.SKIP: "this one does not start",
            ScheduleOverlapPolicy.BUFFER_ONE: "this one starts once it ends",
            ScheduleOverlapPolicy.BUFFER_ALL: "this one starts once it ends",
            ScheduleOverlapPolicy.CANCEL_OTHER: "Temporal cancels it, and this one starts",
            ScheduleOverlapPolicy.TERMINATE_OTHER: "Temporal terminates it, and this one starts",
        }.get(overlap, "this one starts as that policy lets it")
        return f"its run {running[0]} still ran a moment ago: under overlap {policy!r} {outcome}"

    async def backfill_schedule(self, schedule_id: str, start: datetime, end: datetime) -> None:
        handle = self.temporal.get_schedule_handle(schedule_id)
        await self._schedule(
            schedule_id,
            handle.backfill(
                ScheduleBackfill(
                    start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.ALLOW_ALL
                )
            ),
        )

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._schedule(schedule_id, self.temporal.get_schedule_handle(schedule_id).delete())

    async def describe_schedule(self, schedule_id: str) -> Any:
        return await self._schedule(
            schedule_id, self.temporal.get_schedule_handle(schedule_id).describe()
        )

    async def schedule_runs(self, schedule_id: str, limit: int = 100) -> list[SessionSummary]:
        """Every run of a goal: one query on the record (a deleted schedule's runs too)."""
        runs = await self.list_sessions(schedule_id=schedule_id, limit=limit)
        if not runs:
            await self.describe_schedule(schedule_id)  # UnknownSchedule when there is none
        return runs


class _RecordExtras:
    """Export, search, memory and artifacts (mixed into VigilClient below)."""

    settings: Settings
    db: async_sessionmaker[DbSession]

    async def export(self, session_id: str, fmt: str = "jsonl") -> AsyncGenerator[str]:
        from vigil.activities.record import reads
        from vigil.activities.record.rls import acting_for
        from vigil.workers.inputs import export_format  # inputs imports this module

        fmt = export_format(fmt)
        agent = await self.agent_of(session_id)  # type: ignore[attr-defined]
        if agent is None:
            raise UnknownSession(f"no session with id {session_id!r}")
        async with self.db() as db, acting_for(db, agent):
            try:
                gen = (
                    reads.export_jsonl(db, session_id)
                    if fmt == "jsonl"
                    else reads.export_markdown(db, session_id)
                )
                async for chunk in gen:
                    yield chunk
            except reads.SessionNotFound as exc:
                raise UnknownSession(f"no session with id {session_id!r}") from exc

    async def search(self, agent_id: str, query: str, limit: int = 20) -> Any:
        from vigil.activities.record import reads

        async with self.db() as db:  # search_messages acts for the agent
            return await reads.search_messages(db, agent_id, query, limit=limit)

    @contextlib.asynccontextmanager
    async def _memory(self) -> AsyncIterator[Any]:
        """A memory store for one call; its embedder (and its HTTP client) closed after."""
        from vigil.workers.wiring import make_memory_store

        store = make_memory_store(self.settings, self.db)
        try:
            yield store
        finally:
            await store.embedder.aclose()

    async def memory_search(
        self,
        agent_id: str,
        query: str,
        k: int = 10,
        include_superseded: bool = False,
        kinds: list[str] | None = None,
    ) -> list[Any]:
        for kind in kinds or ():  # as memory_add: an unknown kind is a typo, not "none found"
            if kind not in MEMORY_KINDS:
                raise BadArgument(f"unknown memory kind {kind!r}; one of {', '.join(MEMORY_KINDS)}")
        from vigil.activities.memory.provenance import EmbedderMismatch

        try:
            async with self._memory() as memory:
                result: list[Any] = await memory.recall(
                    agent_id, query, k=k, include_superseded=include_superseded, kinds=kinds
                )
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        except EmbedderMismatch as exc:
            raise Refused(str(exc)) from exc
        return result

    async def memory_forget(
        self, agent_id: str, memory_id: int, *, by: str, reason: str | None = None
    ) -> Any:
        """Forget one memory (kept for history, never recalled); the memories it had
        superseded are current again (``Forgotten.restored_ids``). NotFound if the agent
        has no such memory, or it was forgotten before (who forgot it, and when)."""
        try:
            async with self._memory() as memory:
                forgotten = await memory.forget(agent_id, memory_id, by=by, reason=reason)
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        if forgotten is None:
            raise NotFound(f"agent {agent_id!r} has no memory {memory_id}")
        if not forgotten.now:
            was = forgotten.record
            when = f"{was.forgotten_at:%Y-%m-%d %H:%M:%S} UTC" if was.forgotten_at else "before"
            raise NotFound(
                f"memory {memory_id} of agent {agent_id!r} is already forgotten "
                f"(by {was.forgotten_by or 'unknown'} at {when})"
            )
        return forgotten

    async def memory_add(
        self,
        agent_id: str,
        content: str,
        *,
        kind: str = "fact",
        subject: str | None = None,
        importance: float = 0.5,
    ) -> Any:
        if kind not in MEMORY_KINDS:
            raise BadArgument(f"unknown memory kind {kind!r}; one of {', '.join(MEMORY_KINDS)}")
        from vigil.activities.memory.provenance import EmbedderMismatch

        try:
            async with self._memory() as memory:
                return await memory.add(
                    agent_id, content, kind=kind, subject=subject, importance=importance
                )
        except ValueError as exc:
            raise BadArgument(str(exc)) from exc
        except EmbedderMismatch as exc:
            raise Refused(str(exc)) from exc

    async def artifact_download(self, session_id: str, name: str, dest: Any) -> Any:
        """Stream an artifact to ``dest`` (a path, or a binary file such as stdout);
        verified against its sha256. UnknownArtifact when the session has no such artifact
        or the store no longer holds its bytes."""
        from pathlib import Path

        from vigil.activities.artifacts.registry import iterate_in_thread, resolve_artifact
        from vigil.activities.artifacts.store import ArtifactError, ArtifactNotFound
        from vigil.workers.wiring import make_store

        row = await self.require_session(session_id)  # type: ignore[attr-defined]
        store = make_store(self.settings)
        try:
            ref = await resolve_artifact(
                self.db, agent_id=row.agent_id, session_id=session_id, name=name
            )
        except ArtifactNotFound as exc:
            raise UnknownArtifact(f"session {session_id} has no artifact {name!r}") from exc
        except (ArtifactError, ValueError) as exc:
            raise BadArgument(f"artifact {name!r}: {exc}") from exc
        try:
            chunks = iterate_in_thread(await asyncio.to_thread(store.open, ref.sha256))
        except ArtifactNotFound as exc:
            uri_of = getattr(store, "uri", None)
            here = str(uri_of(ref.sha256)) if uri_of else f"{store.scheme}:"
            if not ref.storage_uri.startswith(f"{store.scheme}:") or (
                uri_of is not None and here != ref.storage_uri
            ):
                raise UnknownArtifact(
                    f"artifact {name!r} was stored at {ref.storage_uri}, before the artifact "
                    f"backend changed (now {self.settings.artifact_backend}: {here}); set "
                    "VIGIL_ARTIFACT_BACKEND back to where it was stored, or copy the object there"
                ) from exc
            raise UnknownArtifact(
                f"artifact {name!r} is recorded but its bytes are missing from {here}"
            ) from exc
        if hasattr(dest, "write"):  # a file object: written as the bytes stream
            try:
                async for chunk in chunks:
                    dest.write(chunk)
            except (ArtifactError, ValueError) as exc:
                raise VigilError(f"artifact {name!r}: {exc}") from exc
            dest.flush()
            return ref
        target = Path(dest)
        # A device or a pipe (/dev/null, /dev/stdout) is written into, never replaced.
        direct = target.exists() and not target.is_file()  # noqa: ASYNC240
        tmp = target if direct else target.with_name(target.name + ".part")
        try:
            # A local file written chunk by chunk as the download streams.
            with open(tmp, "wb") as handle:  # noqa: ASYNC230
                async for chunk in chunks:
                    handle.write(chunk)
        except (ArtifactError, ValueError) as exc:
            if not direct:
                tmp.unlink(missing_ok=True)
            raise VigilError(f"artifact {name!r}: {exc}") from exc
        if not direct:
            tmp.replace(target)
        return ref

    async def artifacts(self, session_id: str) -> list[Any]:
        from vigil.activities.artifacts.registry import list_artifacts

        row = await self.require_session(session_id)  # type: ignore[attr-defined]
        return await list_artifacts(self.db, agent_id=row.agent_id, session_id=session_id)


class VigilClient(_RecordExtras, _VigilClientCore):
    """The async API over the Temporal client and the record (see module docstring)."""

    @classmethod
    async def connect(cls, settings: Settings) -> VigilClient:
        core = await _VigilClientCore.connect(settings)
        return cls(core.settings, core.temporal)
