"""Reading sessions: one session's status, record row, live state and view; pages of
sessions (with those Temporal runs that have no record row yet) and of pending approvals.

Part of VigilClient (workers/client.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from vigil.schema import names
from vigil.schema.payloads import FINAL_STATUSES, SessionResult, SessionState, SessionStatus
from vigil.workers.client_errors import (
    BadArgument,
    NotRecordedYet,
    NotTakenYet,
    UnknownSession,
    Unreachable,
    VigilError,
)
from vigil.workers.client_start import SessionStart
from vigil.workers.client_views import (
    RUNNING_STATUSES,
    STATE_QUERY_SECONDS,
    STATUSES,
    UNRECORDED,
    RetriedCall,
    SessionPage,
    SessionSummary,
    SessionView,
    retried_calls,
    said_status,
)
from vigil.workers.liveness import POLLER_FRESH, is_unreachable

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start; `reconcile`'s logging
    # (structlog) would slow every command.
    from vigil.activities.record import sessions as session_reads
    from vigil.activities.record import store as record
    from vigil.workers.reconcile import Reconciled


MAX_RECENT_MESSAGES = 500
"""The most recent messages one view of a session shows (`vigil show --last`, the API's
``last``)."""


class SessionReads(SessionStart):
    """Reading sessions (a layer of VigilClient)."""

    async def state(self, session_id: str) -> SessionState:
        desc = await self._rpc(session_id, self.handle(session_id).describe())
        return await self._state_of(session_id, desc)

    async def _state_of(self, session_id: str, desc: Any) -> SessionState:
        """The state query of the session Temporal described as ``desc``."""
        # A query is answered by a worker, even for an ended session.
        await self.require_worker(desc.task_queue, what=f"session {session_id} cannot answer")
        handle = self.handle(session_id)
        result: SessionState = await self.bounded(
            session_id, handle.query(names.QUERY_STATE, result_type=SessionState), "query"
        )
        return result

    async def result(
        self,
        session_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - public API
    ) -> SessionResult | None:
        """The session's result once it ends (None when it ended without one: cancel, failure).
        ``session_id``: the id (``start_session(...).id``)."""
        handle = self.temporal.get_workflow_handle(session_id, result_type=SessionResult)
        try:
            value: SessionResult = await asyncio.wait_for(
                self._rpc(session_id, handle.result()), timeout
            )
        except WorkflowFailureError:  # cancelled, failed, terminated: the record says how
            return None
        return value

    async def status(self, session_id: str) -> str:
        """The recorded status; falls back to Temporal when the row is not there yet."""
        from vigil.activities.record import store as record

        async with self.db() as db:
            row = await record.get_session(db, session_id)
        if row is not None:
            return row.status
        desc = await self._rpc(session_id, self.handle(session_id).describe())
        return str(desc.status.name).lower() if desc.status else "unknown"

    async def require_session(
        self, session_id: str, *, visible: Callable[[str | None], bool] | None = None
    ) -> record.SessionRow:
        """The session's record row. UnknownSession when nobody knows it, NotRecordedYet
        when Temporal runs it but no worker has recorded it yet. ``visible``: whether the
        caller may know of a session of that agent (None: an agent Temporal does not name);
        a session not recorded yet whose agent it may not know is an UnknownSession too,
        said as for an id nobody knows (an agent-scoped token learns nothing of another
        agent's sessions, not even that one was started)."""
        from vigil.activities.record import store as record

        if "\x00" in session_id:  # PostgreSQL cannot hold it: no session has such an id
            raise UnknownSession(f"no session with id {session_id!r}")
        async with self.db() as db:
            row = await record.get_session(db, session_id)
        if row is None:
            # Started but not yet recorded? Temporal knows it, or nobody does; and with no
            # worker on its queue it never will be.
            desc = await self._describe_live(
                session_id, what="session {id} has no record and waits", visible=visible
            )
            if desc.status not in RUNNING_STATUSES:
                if await self._erased(session_id, desc):
                    # Its runs are terminated and their deletion asked for: Temporal
                    # deletes them in the background, after the record is gone.
                    raise UnknownSession.erased(session_id)
                # It ended before any worker recorded it (terminated at once, say): it
                # never will be; said at once, not waited for.
                status = said_status(desc.status) if desc.status else "ended"
                raise UnknownSession(
                    f"session {session_id!r} ended ({status}) before anything was recorded"
                )
            raise NotRecordedYet(f"session {session_id!r} has no record yet; try again shortly")
        return row

    async def started_goal(self, session_id: str) -> str | None:
        """The goal in the first history event of the session's first run."""
        from vigil.schema.payloads import StartSessionInput

        try:
            desc = await self.handle(session_id).describe()
            first_run = desc.raw_description.workflow_execution_info.first_run_id or None
            handle = self.temporal.get_workflow_handle(session_id, run_id=first_run)
            async for event in handle.fetch_history_events(page_size=1):
                started = event.workflow_execution_started_event_attributes
                [arg] = await self.temporal.data_converter.decode(
                    list(started.input.payloads), [StartSessionInput]
                )
                return str(arg.goal)
        except RPCError as exc:
            if is_unreachable(exc):
                raise Unreachable(self.temporal_down()) from None
            return None
        return None

    async def require_session_soon(
        self,
        session_id: str,
        timeout: float = 15.0,  # noqa: ASYNC109 - a polling budget
        *,
        visible: Callable[[str | None], bool] | None = None,
    ) -> record.SessionRow:
        """Like require_session, but give a just-started session time to write its row."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                return await self.require_session(session_id, visible=visible)
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
        since = _utc_since(since)
        if status == UNRECORDED:
            return (await self._unrecorded(agent, since, set(), schedule_id))[:limit]
        page = await self.session_page(
            agent=agent, status=status, since=since, schedule_id=schedule_id, limit=limit
        )
        if status not in (None, SessionStatus.RUNNING.value):
            return page.items
        unrecorded = await self._unrecorded(agent, since, {s.id for s in page.items}, schedule_id)
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
        since = _utc_since(since)
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

    async def retrying(self, session_id: str) -> list[RetriedCall]:
        """The session's calls that failed and wait for another attempt (what `vigil show`
        lists as retrying): why a running session does not move."""
        desc = await asyncio.wait_for(
            self._rpc(session_id, self.handle(session_id).describe()), STATE_QUERY_SECONDS
        )
        return retried_calls(desc)

    async def session_view(self, session_id: str, last: int = 20) -> SessionView:
        """A session's record, its live state (while it runs and a worker answers) and
        its ``last`` messages (0 to ``MAX_RECENT_MESSAGES``): what `vigil show` and the
        API's session page show."""
        if not 0 <= last <= MAX_RECENT_MESSAGES:
            raise BadArgument(f"last {last} is out of range: 0 to {MAX_RECENT_MESSAGES} messages")
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
                retrying = [str(call) for call in retried_calls(desc)]
                live = await asyncio.wait_for(self._state_of(session_id, desc), STATE_QUERY_SECONDS)
            except VigilError as exc:
                unavailable = str(exc)
            except TimeoutError:
                unavailable = f"no worker answered in {STATE_QUERY_SECONDS:.0f} s"
        from vigil.activities.record import store as record
        from vigil.activities.record.archived import archived_transcript
        from vigil.activities.record.rls import acting_for

        async with acting_for(self.db, row.agent_id) as db:
            recent = await record.recent_messages(db, session_id, last)
        return SessionView(
            row,
            live,
            recent,
            self.ui_link(session_id),
            unavailable,
            archived_transcript(row.metadata),
            retrying,
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
        out: dict[str, str] = {}
        try:
            for start in range(0, len(ids), 200):  # every row (only the first 200 were asked)
                chunk = ids[start : start + 200]
                quoted = ", ".join("'" + i.replace("'", "") + "'" for i in chunk)
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
        self,
        agent: str | None,
        since: datetime | None,
        recorded: set[str],
        schedule_id: str | None = None,
    ) -> list[SessionSummary]:
        """Running sessions Temporal knows whose record row is not written yet (no worker
        has run their first step): shown, so a session never seems to vanish (a
        schedule's run that fired while its workers were down, too)."""
        query = (
            f"WorkflowType = '{names.WORKFLOW_SESSION}' AND ExecutionStatus = 'Running'"
            + (f" AND {names.SA_AGENT.name} = '{agent.replace(chr(39), '')}'" if agent else "")
            + (f" AND StartTime >= '{since.isoformat()}'" if since else "")
            + (
                f" AND {names.SA_SCHEDULE.name} = '{schedule_id.replace(chr(39), '')}'"
                if schedule_id
                else ""
            )
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
        """The agent a session belongs to, read each time: an erased session's id may be
        taken again by another agent's session (a long-lived API once kept the first
        answer, and let the first agent's tokens reach the second session)."""
        if "\x00" in session_id:
            return None
        from vigil.activities.record import store as record

        async with self.db() as db:
            return await record.session_agent(db, session_id)

    async def reconcile(self, session_ids: list[str] | None = None) -> list[Reconciled]:
        """Close sessions whose workflow ended outside vigil's control (workers/reconcile.py)."""
        from vigil.workers.reconcile import reconcile

        try:
            return await reconcile(self.temporal, self.db, session_ids=session_ids)
        except RPCError as exc:
            raise Unreachable(f"Temporal did not answer: {exc.message}") from exc


def _utc_since(since: datetime | None) -> datetime | None:
    """``since`` in UTC (one without a time zone is read as UTC); a time that falls off
    the calendar once in UTC (year 1 at +14:00) is the caller's mistake, not a database
    error."""
    if since is None:
        return None
    if since.tzinfo is None:
        return since.replace(tzinfo=UTC)
    try:
        return since.astimezone(UTC)
    except OverflowError:
        raise BadArgument(
            f"since {since.isoformat()} is out of range: from year 1 to 9999 in UTC"
        ) from None
