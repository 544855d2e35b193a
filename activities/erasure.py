"""Erasure of a subject (one session, or one agent) from every store vigil writes to.

Order, so that a failure anywhere can be finished by erasing again:

1. Temporal: every run of the subject's sessions (a continued-as-new session has
   several) and of their webhook deliveries is deleted through the workflow service
   (Temporal terminates a running one as it deletes it); for an agent, its
   recurring-goal schedules are deleted too.
2. PostgreSQL and the object store, in one transaction: ``record.erasure.purge`` removes
   the rows (a memory of an erased session that others merged their words into is handed
   on to them, re-embedded with the configured embedder), the bytes of every artifact and
   archive no one else refers to are deleted while their digests are locked, and the
   receipt is written; then it commits.

What remains is the receipt (what, when, who, how much), and the rows the agent's triggers
keep of deliveries that acted on the sessions (their ids, a digest of each request, the
answer without the session), so a sender's retry does not act again. Used by the
``vigil erase`` command and by the retention workflow's erase activity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode

from vigil.activities.artifacts.store import ArtifactStore
from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.provenance import identity_of
from vigil.activities.memory.values import _vector_literal
from vigil.activities.record import erasure as queries
from vigil.activities.record import handon
from vigil.activities.record.erasure import ErasureReceipt, ErasureScope, SubjectKind
from vigil.schema import names

log = logging.getLogger(__name__)
_QUERY_CHUNK = 50
DELETE_WAIT_SECONDS = 20.0
_TELL_AFTER_SECONDS = 1.0


class NothingToErase(LookupError):
    """No record, memory or workflow execution of the subject exists."""


class ErasureStopped(RuntimeError):
    """Something the erasure must reach could not be read; it stopped before erasing."""


@dataclass(frozen=True)
class Run:
    """One workflow execution (one run of a session)."""

    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class ErasurePlan:
    """What erasing a subject would remove, for a confirmation before it is done."""

    scope: ErasureScope
    runs: list[Run]
    schedules: list[str]

    @property
    def empty(self) -> bool:
        return self.scope.empty and not self.runs and not self.schedules


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


EmbedderAccess = Callable[[], AbstractAsyncContextManager[Embedder | None]]
"""Gives the configured embedder for the length of an erasure (None: none can be made)."""


class Eraser:
    """Built with the clients it needs (database, object store, Temporal) and access to
    the configured embedder (to re-embed a memory it hands on; without it, such a memory
    is deleted with the rest)."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[DbSession],
        store: ArtifactStore,
        temporal: Client,
        embedder_access: EmbedderAccess | None = None,
        delete_wait_seconds: float = DELETE_WAIT_SECONDS,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.store = store
        self.temporal = temporal
        self.embedder_access = embedder_access
        self.delete_wait_seconds = delete_wait_seconds
        """How long an erasure waits for Temporal to delete the runs it asked it to."""

    async def plan(self, kind: SubjectKind, subject: str) -> ErasurePlan:
        async with self.sessionmaker() as db:
            if kind == "session":
                scope = await queries.session_scope(db, subject)
            else:
                scope = await queries.agent_scope(db, subject)
        workflow_ids = set(scope.session_ids) | ({subject} if kind == "session" else set())
        runs = await self._runs(workflow_ids, agent=subject if kind == "agent" else None)
        schedules = await self._schedules(subject) if kind == "agent" else []
        return ErasurePlan(scope, runs, schedules)

    async def erase(
        self,
        kind: SubjectKind,
        subject: str,
        *,
        by: str,
        reason: str | None = None,
        waiting: Callable[[int], None] | None = None,
    ) -> ErasureReceipt:
        """Erase the subject everywhere; raises NothingToErase when nothing is found.
        ``waiting`` is told, once, how many runs Temporal is still deleting when that has
        taken a second (the erasure waits ``delete_wait_seconds`` at most); the receipt
        counts those it had not deleted by then (``workflow_runs_still_deleting``)."""
        plan = await self.plan(kind, subject)
        if plan.empty:
            raise NothingToErase(f"no {kind} {subject!r} in the record, memory or Temporal")
        for schedule_id in plan.schedules:
            with contextlib.suppress(RPCError):  # deleted meanwhile
                await self.temporal.get_schedule_handle(schedule_id).delete()
        deleting = await self._delete_runs(plan.runs, waiting)
        # Runs the plan could not see: one a schedule started before it was deleted, a
        # session or a webhook delivery too new for Temporal's listing when it was made.
        ids = set(plan.scope.session_ids) | ({subject} if kind == "session" else set())
        if kind == "agent":  # and those recorded since (each asked for by its id)
            async with self.sessionmaker() as db:
                ids |= set((await queries.agent_scope(db, subject)).session_ids)
        seen = set(plan.runs)
        later = [
            run
            for run in await self._runs(ids, agent=subject if kind == "agent" else None)
            if run not in seen
        ]
        if later:
            deleting += await self._delete_runs(later, None)
        runs = len(plan.runs) + len(later)

        embedded = await self._embedded(plan.scope) if kind == "session" else None
        async with self.sessionmaker() as db, db.begin():
            purged = await queries.purge(db, plan.scope, embedded)
            for sha in purged.objects:
                await asyncio.to_thread(self.store.delete, sha)
            counts = {
                **purged.counts,
                "objects": len(purged.objects),
                "workflow_runs": runs,
                "schedules": len(plan.schedules),
            }
            if deleting:
                counts["workflow_runs_still_deleting"] = deleting
            receipt = await queries.write_receipt(
                db, kind=kind, subject=subject, by=by, reason=reason, counts=counts
            )
        return receipt

    async def _embedded(self, scope: ErasureScope) -> handon.Embedded | None:
        """Vectors of the words the session's memories would be handed on with, made
        before the erasure's transaction; None when there is nothing to hand on or no
        embedder (an embedder that fails is no reason to keep what is to be erased: the
        memories it would have served go with the session, and the receipt counts them)."""
        if scope.memories == 0 or self.embedder_access is None:
            return None
        async with self.sessionmaker() as db:
            wanted = await handon.texts(db, scope.subject)
        if not wanted:
            return None
        async with self.embedder_access() as embedder:
            if embedder is None:
                return None
            identity = identity_of(embedder)
            space = handon.Embedded(identity.name, identity.version, identity.dim, {})
            words = sorted({w for row, w in wanted if space.same_space(row)})
            try:
                vectors = await embedder.embed(words) if words else []
                literals = [_vector_literal(v, identity.dim) for v in vectors]
            except Exception as exc:
                log.warning("erasure: no vectors for memories to hand on: %s", exc)
                return space
        return replace(space, vectors=dict(zip(words, literals, strict=True)))

    # --- Temporal -------------------------------------------------------------------

    async def _runs(self, workflow_ids: Iterable[str], *, agent: str | None) -> list[Run]:
        found: dict[tuple[str, str], Run] = {}
        ids = sorted(workflow_ids)
        queries_: list[str] = [
            "WorkflowId IN (" + ", ".join(_quoted(i) for i in ids[n : n + _QUERY_CHUNK]) + ")"
            for n in range(0, len(ids), _QUERY_CHUNK)
        ]
        if agent is not None:
            queries_.append(f"{names.SA_AGENT.name} = {_quoted(agent)}")
        # Each session's webhook deliveries (a child it abandons, retrying until the
        # webhook takes it): they carry its events, so they go with it.
        queries_ += [
            f"WorkflowType = {_quoted(names.WORKFLOW_WEBHOOK_NOTIFY)} AND ("
            + " OR ".join(
                f"WorkflowId STARTS_WITH {_quoted(i + names.WEBHOOK_ID_INFIX)}"
                for i in ids[n : n + _QUERY_CHUNK]
            )
            + ")"
            for n in range(0, len(ids), _QUERY_CHUNK)
        ]
        for query in queries_:
            try:
                async for wf in self.temporal.list_workflows(query):
                    found[(wf.id, wf.run_id)] = Run(wf.id, wf.run_id)
            except RPCError as exc:
                # A namespace without vigil's search attributes cannot be asked by agent;
                # its sessions are still found by id.
                if exc.status != RPCStatusCode.INVALID_ARGUMENT:
                    raise
        # Visibility lags behind a just-started run: ask each session for its latest too.
        for workflow_id in ids:
            try:
                desc = await self.temporal.get_workflow_handle(workflow_id).describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            found[(desc.id, desc.run_id)] = Run(desc.id, desc.run_id)
        return sorted(found.values(), key=lambda r: (r.workflow_id, r.run_id))

    async def _schedules(self, agent: str) -> list[str]:
        """The agent's recurring goals (schedules starting its sessions)."""
        out: list[str] = []
        async for item in await self.temporal.list_schedules():
            try:
                desc = await self.temporal.get_schedule_handle(item.id).describe()
            except RPCError as exc:
                # Deleted since it was listed; any other failure ends the erasure (a
                # schedule skipped would go on starting the erased agent's sessions).
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise ErasureStopped(
                        f"schedule {item.id!r} could not be read ({exc.message}); nothing "
                        "was erased: run the erasure again"
                    ) from exc
                continue
            action = desc.schedule.action
            if not isinstance(action, ScheduleActionStartWorkflow):
                continue
            if action.workflow != names.WORKFLOW_SESSION:
                continue
            if action.typed_search_attributes.get(names.SA_AGENT) == agent:
                out.append(item.id)
        return out

    async def _delete_runs(
        self, runs: list[Run], waiting: Callable[[int], None] | None = None
    ) -> int:
        """Delete ``runs``; how many Temporal had not yet deleted when the wait ran out.

        A running run is not terminated first: Temporal terminates it itself and deletes it
        as it closes. A run that closed before is deleted once the server has marked its
        close processed (``history.<queue>ProcessorUpdateAckInterval``: 30 s by Temporal's
        default, every second on vigil's servers, ``stack.services.ACK_INTERVAL``)."""
        for run in runs:
            try:
                await self.temporal.workflow_service.delete_workflow_execution(
                    DeleteWorkflowExecutionRequest(
                        namespace=self.temporal.namespace,
                        workflow_execution=WorkflowExecution(
                            workflow_id=run.workflow_id, run_id=run.run_id
                        ),
                    )
                )
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
        # Deletion is asynchronous in Temporal: wait (bounded) until each run is gone, so
        # the receipt is written after the history is.
        clock = asyncio.get_running_loop().time
        started = clock()
        tell, left = waiting, list(runs)
        while left and clock() < started + self.delete_wait_seconds:
            handle = self.temporal.get_workflow_handle(left[0].workflow_id, run_id=left[0].run_id)
            try:
                await handle.describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                left.pop(0)
                continue
            if tell is not None and clock() - started >= _TELL_AFTER_SECONDS:
                tell(len(left))
                tell = None
            await asyncio.sleep(0.2)
        return len(left)
