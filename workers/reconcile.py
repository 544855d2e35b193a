"""The reconciler: the session record converges with Temporal.

A session's workflow writes its own ending, except when it ends outside vigil's control:
terminated by an operator or by Temporal itself (the 50 MB history limit), past its
execution timeout, failed by a bug that no retry fixes, or deleted. Its sessions row then
stays `running` / `waiting_approval` forever. The reconciler lists the rows that are not
final, asks Temporal (describe, then the closing event for the reason) and closes those
whose workflow is closed or gone (activities/record/reconcile.py writes the ending).

Reached from `vigil reconcile` (VigilClient.reconcile) and run periodically by every
`vigil worker` (VIGIL_RECONCILE_SECONDS; closing is conditional and idempotent, so
several workers reconciling at once do no harm).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from vigil.activities.record import reconcile as record
from vigil.schema.names import ERR_EARLIER_SESSION
from vigil.schema.payloads import SessionResult, SessionStatus
from vigil.workers.logs import get as get_logger

log = get_logger("vigil.reconcile")

PERIODIC_IDLE = timedelta(minutes=1)
"""The worker's loop leaves rows touched this recently alone (a session just starting)."""
CONCURRENCY = 8
"""Temporal describes in flight at once."""


@dataclass(frozen=True)
class Reconciled:
    session_id: str
    previous_status: str
    status: str
    temporal_status: str
    """Temporal's status of the workflow, or ``not_found``."""
    reason: str


@dataclass(frozen=True)
class _Ending:
    status: SessionStatus
    temporal_status: str
    reason: str
    details: dict[str, Any]


async def reconcile(
    temporal: Client,
    sessionmaker: async_sessionmaker[DbSession],
    *,
    idle: timedelta = timedelta(0),
    session_ids: Sequence[str] | None = None,
) -> list[Reconciled]:
    """Close every session whose record is not final while its workflow has ended."""
    done: list[Reconciled] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    after = ""
    while True:
        async with sessionmaker() as db:
            page = await record.open_sessions(
                db,
                idle_for=idle,
                after_id=after,
                session_ids=list(session_ids) if session_ids is not None else None,
            )
        if not page:
            return done
        after = page[-1].id

        async def one(row: record.OpenSession) -> Reconciled | None:
            async with gate:
                return await _reconcile_one(temporal, sessionmaker, row.id)

        for found in await asyncio.gather(*(one(row) for row in page)):
            if found is not None:
                done.append(found)


async def reconcile_periodically(
    temporal: Client,
    sessionmaker: async_sessionmaker[DbSession],
    *,
    every: float,
    idle: timedelta = PERIODIC_IDLE,
) -> None:
    """The worker's loop: reconcile every ``every`` seconds until cancelled."""
    while True:
        await asyncio.sleep(every)
        try:
            for r in await reconcile(temporal, sessionmaker, idle=idle):
                log.warning(
                    "session ended outside vigil; record reconciled",
                    session_id=r.session_id,
                    status=r.status,
                    temporal_status=r.temporal_status,
                    reason=r.reason,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Temporal or PostgreSQL away: try again next time
            log.warning("reconcile pass failed", error=f"{exc.__class__.__name__}: {exc}"[:300])


async def _reconcile_one(
    temporal: Client, sessionmaker: async_sessionmaker[DbSession], session_id: str
) -> Reconciled | None:
    ending = await _ending(temporal, session_id)
    if ending is None:
        return None
    async with sessionmaker.begin() as db:
        previous = await record.close_ended_session(
            db,
            session_id,
            status=ending.status.value,
            reason=ending.reason,
            details={"temporal_status": ending.temporal_status, **ending.details},
        )
    if previous is None:  # it wrote its own ending meanwhile
        return None
    return Reconciled(
        session_id, previous, ending.status.value, ending.temporal_status, ending.reason
    )


async def _ending(temporal: Client, session_id: str) -> _Ending | None:
    """How the session's workflow ended; None while it runs."""
    handle = temporal.get_workflow_handle(session_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return _Ending(
            SessionStatus.TERMINATED,
            "not_found",
            "the workflow no longer exists in Temporal (deleted, or past the namespace's "
            "retention) and never recorded an ending",
            {},
        )
    status = desc.status
    if status in (None, WorkflowExecutionStatus.RUNNING):
        return None
    details: dict[str, Any] = {
        "run_id": desc.run_id,
        "closed_at": desc.close_time.isoformat() if desc.close_time else None,
    }
    last = await _closing_event(temporal, session_id, desc.run_id)
    if status == WorkflowExecutionStatus.TERMINATED:
        attrs = last.workflow_execution_terminated_event_attributes if last else None
        who = f" by {attrs.identity}" if attrs and attrs.identity else ""
        why = f": {attrs.reason}" if attrs and attrs.reason else ""
        return _Ending(
            SessionStatus.TERMINATED, "terminated", f"terminated in Temporal{who}{why}", details
        )
    if status == WorkflowExecutionStatus.TIMED_OUT:
        return _Ending(
            SessionStatus.TIMED_OUT,
            "timed_out",
            "the workflow's execution timeout passed in Temporal",
            details,
        )
    if status == WorkflowExecutionStatus.FAILED:
        failure = last.workflow_execution_failed_event_attributes.failure if last else None
        if failure is not None and failure.application_failure_info.type == ERR_EARLIER_SESSION:
            # A later workflow under the id, refused as this session's record is not its
            # own: the one that held the record closed without writing its end.
            return _Ending(
                SessionStatus.TERMINATED,
                "failed",
                "its workflow closed in Temporal without recording an ending (the newest "
                "run under its id is a later workflow's, refused as an earlier session's)",
                details,
            )
        cause = failure.message[:500] if failure is not None and failure.message else "unknown"
        return _Ending(SessionStatus.FAILED, "failed", f"the workflow failed: {cause}", details)
    if status == WorkflowExecutionStatus.CANCELED:
        return _Ending(
            SessionStatus.CANCELLED, "canceled", "the workflow was cancelled in Temporal", details
        )
    if status == WorkflowExecutionStatus.COMPLETED:
        result = await _result(temporal, session_id)
        if result is not None:
            return _Ending(result.status, "completed", result.summary[:2000], details)
        return _Ending(
            SessionStatus.COMPLETED, "completed", "the workflow completed in Temporal", details
        )
    return None  # continued-as-new: describe follows to the latest run, so not reached


async def _closing_event(temporal: Client, session_id: str, run_id: str) -> HistoryEvent | None:
    """The last event of a closed run, without reading its (maybe 50 MB) history."""
    with contextlib.suppress(RPCError):
        resp = await temporal.workflow_service.get_workflow_execution_history_reverse(
            GetWorkflowExecutionHistoryReverseRequest(
                namespace=temporal.namespace,
                execution=WorkflowExecution(workflow_id=session_id, run_id=run_id),
                maximum_page_size=1,
            )
        )
        if resp.history.events:
            return resp.history.events[0]
    return None


async def _result(temporal: Client, session_id: str) -> SessionResult | None:
    handle = temporal.get_workflow_handle(session_id, result_type=SessionResult)
    try:
        value: SessionResult = await asyncio.wait_for(handle.result(follow_runs=False), 10)
    except Exception:  # not a SessionResult: the plain ending is said instead
        return None
    return value
