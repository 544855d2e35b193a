"""Data governance as a typed service: erasure, archive and restore, sweeping, retention.

The CLI (and the HTTP API) call this; it calls the record modules and the activities'
library code, and holds no SQL. Errors a user can fix become ``VigilError``s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from vigil.activities.artifacts.store import ArtifactError
from vigil.activities.artifacts.sweeper import DEFAULT_GRACE, SweepReport, sweep_artifacts
from vigil.activities.erasure import Eraser, ErasurePlan, ErasureStopped, NothingToErase
from vigil.activities.record import agents as agent_rows
from vigil.activities.record import archive as archives
from vigil.activities.record import erasure as erasure_queries
from vigil.activities.record import retention as retention_queries
from vigil.activities.record.erasure import ErasureReceipt, SubjectKind
from vigil.activities.record.retention import RetentionPolicy
from vigil.schema import names
from vigil.schema.governance import RetentionRunInput
from vigil.workers.client import BadArgument, NotFound, Refused, VigilClient, VigilError
from vigil.workers.client_errors import temporal_refusal
from vigil.workers.wiring import configured_embedder, make_store

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(hours=1)
RETENTION_EVERY_MIN = timedelta(minutes=1)
"""The shortest period of the retention sweep (Temporal refuses intervals under a second;
a sweep reads every policy's due sessions, so one a minute is already plenty)."""


@dataclass(frozen=True)
class RetentionSet:
    """What ``set_retention`` did: the policy now in force (None: removed), and the runs of
    ``vigil-retention`` it ended because they waited on another task queue."""

    policy: RetentionPolicy | None
    ended: list[EndedRun]


@dataclass(frozen=True)
class EndedRun:
    workflow_id: str
    task_queue: str


@dataclass(frozen=True)
class Subject:
    """Whom an erasure is about: one session, or one agent with everything it has."""

    kind: SubjectKind
    id: str


class Governance:
    """Erasure, archive and retention over a connected client."""

    def __init__(self, client: VigilClient) -> None:
        self.client = client
        self.store = make_store(client.settings)
        self.eraser = Eraser(
            sessionmaker=client.db,
            store=self.store,
            temporal=client.temporal,
            embedder_access=lambda: configured_embedder(client.settings),
        )

    # --- erasure ------------------------------------------------------------------------

    async def erasure_plan(self, subject: Subject) -> ErasurePlan:
        try:
            plan = await self.eraser.plan(subject.kind, subject.id)
        except ErasureStopped as exc:
            raise VigilError(str(exc)) from exc
        if plan.empty:
            raise NotFound(f"nothing to erase: no {subject.kind} {subject.id!r} anywhere")
        return plan

    async def erase(
        self,
        subject: Subject,
        *,
        by: str,
        reason: str | None = None,
        waiting: Callable[[int], None] | None = None,
    ) -> ErasureReceipt:
        """Erase ``subject`` (``waiting``: see ``Eraser.erase``)."""
        try:
            return await self.eraser.erase(
                subject.kind, subject.id, by=by, reason=reason, waiting=waiting
            )
        except NothingToErase as exc:
            raise NotFound(f"nothing to erase: {exc}") from exc
        except ErasureStopped as exc:
            raise VigilError(str(exc)) from exc

    async def receipts(self, subject: str | None = None, limit: int = 100) -> list[ErasureReceipt]:
        async with self.client.db() as db:
            return await erasure_queries.list_receipts(db, subject=subject, limit=limit)

    # --- archive, restore, sweep -----------------------------------------------------------

    async def archive(self, session_id: str, *, prune: bool) -> archives.ArchiveResult:
        try:
            return await archives.archive_session(
                self.client.db, self.store, session_id, prune=prune
            )
        except archives.SessionNotFound as exc:
            raise NotFound(f"no session with id {session_id!r}") from exc
        except (archives.SessionNotFinished, archives.ArchiveConflict) as exc:
            raise Refused(str(exc)) from exc

    async def restore(self, session_id: str) -> archives.RestoreResult:
        try:
            return await archives.restore_session(self.client.db, self.store, session_id)
        except archives.SessionNotFound as exc:
            raise NotFound(f"no session with id {session_id!r}") from exc
        except archives.ArchiveConflict as exc:
            raise Refused(str(exc)) from exc
        except (archives.ArchiveInvalid, ArtifactError) as exc:
            raise VigilError(f"cannot restore {session_id}: {exc}") from exc

    async def sweep(self, *, dry_run: bool, grace: timedelta = DEFAULT_GRACE) -> SweepReport:
        try:
            return await sweep_artifacts(self.store, self.client.db, grace=grace, dry_run=dry_run)
        except ArtifactError as exc:
            raise VigilError(f"sweep stopped: {exc}") from exc

    # --- retention --------------------------------------------------------------------------

    async def set_retention(
        self,
        agent_id: str,
        *,
        archive_after: timedelta | None,
        erase_after: timedelta | None,
        by: str,
        every: timedelta = RETENTION_EVERY,
    ) -> RetentionSet:
        """Set the agent's policy (none of the two periods: remove it), and make sure the
        retention schedule exists and starts runs on this client's task queue."""
        if (why := await agent_rows.new_agent_id_problem(self.client.db, agent_id)) is not None:
            raise BadArgument(why)
        for what, value in (("--archive-after", archive_after), ("--erase-after", erase_after)):
            if value is not None and value < timedelta(0):
                raise BadArgument(f"{what} must not be negative")
        if archive_after is not None and erase_after is not None and archive_after > erase_after:
            raise BadArgument("--archive-after must not be longer than --erase-after")
        if every < RETENTION_EVERY_MIN:
            raise BadArgument(
                f"--every must be at least 1 minute (the sweep's period), not {every}"
            )
        # The schedule first: a policy is never written that no run would apply.
        try:
            ended = await self.ensure_retention_schedule(every)
        except RPCError as exc:
            raise temporal_refusal(exc, "Temporal refused the retention schedule") from exc
        async with self.client.db.begin() as db:
            policy = await retention_queries.set_policy(
                db, agent_id, archive_after=archive_after, erase_after=erase_after, by=by
            )
        return RetentionSet(policy, ended)

    async def retention_policies(self) -> list[RetentionPolicy]:
        async with self.client.db() as db:
            return await retention_queries.list_policies(db)

    async def ensure_retention_schedule(self, every: timedelta = RETENTION_EVERY) -> list[EndedRun]:
        """Create ``vigil-retention``, or point it at this task queue and interval; a run
        of it still under way on another task queue is ended (returned)."""
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                names.WORKFLOW_RETENTION,
                RetentionRunInput(),
                id=f"{names.SCHEDULE_RETENTION}-run",
                task_queue=self.client.settings.task_queue,
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            state=ScheduleState(note="vigil: archive and erase ended sessions per agent policy"),
        )
        temporal = self.client.temporal
        try:
            await temporal.create_schedule(names.SCHEDULE_RETENTION, schedule)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            handle = temporal.get_schedule_handle(names.SCHEDULE_RETENTION)
            await handle.update(replace)
            running = (await handle.describe()).info.running_actions
            return await self._end_runs_elsewhere(
                [
                    r.workflow_id
                    for r in running
                    if isinstance(r, ScheduleActionExecutionStartWorkflow)
                ]
            )
        return []

    async def _end_runs_elsewhere(self, workflow_ids: list[str]) -> list[EndedRun]:
        """End the retention runs of ``workflow_ids`` that wait on a task queue other than
        this client's which no worker polls. Under overlap skip a run under way skips every
        trigger, and one on a queue no worker polls (the schedule was pointed there, or
        that queue's worker is gone) is under way for good: retention would stop without a
        word. A run a worker takes is left to end (the schedule's next run starts on this
        queue). A run ended mid-way loses nothing: each session is archived or erased by
        one activity, and the next run plans what is still due. A run Temporal would not
        end is left as it was (logged): the policy is written all the same."""
        from vigil.workers.liveness import live_pollers

        queue = self.client.settings.task_queue
        ended = []
        for workflow_id in workflow_ids:
            run = self.client.temporal.get_workflow_handle(workflow_id)
            try:
                described = await run.describe()
                if (
                    described.task_queue == queue
                    or described.status != WorkflowExecutionStatus.RUNNING
                    or await live_pollers(self.client.temporal, described.task_queue)
                ):
                    continue
                await run.terminate(
                    reason=f"vigil: the retention schedule now starts its runs on task queue "
                    f"{queue!r}; this run waited on {described.task_queue!r}, which no "
                    "worker polls"
                )
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: it ended meanwhile
                    log.warning("retention run %s not ended: %s", workflow_id, exc.message)
                continue
            ended.append(EndedRun(workflow_id, described.task_queue))
        return ended
