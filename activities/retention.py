"""The retention workflow's activities: plan what is due, archive a session, erase one.

Each is idempotent: archiving an archived session returns its archive, and erasing an
erased session finds nothing and says so (the receipt of the first erasure stands).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from vigil.activities.artifacts.store import ArtifactStore
from vigil.activities.erasure import EmbedderAccess, Eraser, NothingToErase
from vigil.activities.guard import heartbeating
from vigil.activities.record import retention as queries
from vigil.activities.record.archive import (
    ArchiveConflict,
    ArchiveInvalid,
    SessionNotFinished,
    SessionNotFound,
    archive_session,
)
from vigil.schema import names
from vigil.schema.governance import (
    RetentionDue,
    RetentionItemOutput,
    RetentionPlan,
    RetentionPlanInput,
)

REFUSED = "RetentionRefused"


class RetentionActivities:
    """Built by the worker with its database, object store and Temporal client."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[DbSession],
        store: ArtifactStore,
        temporal: Client,
        embedder_access: EmbedderAccess | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.store = store
        self.eraser = Eraser(
            sessionmaker=sessionmaker,
            store=store,
            temporal=temporal,
            embedder_access=embedder_access,
        )

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan, self.archive, self.erase]

    @activity.defn(name=names.ACT_RETENTION_PLAN)
    async def plan(self, arg: RetentionPlanInput) -> RetentionPlan:
        async with self.sessionmaker() as db:
            due = await queries.due_sessions(db, limit=arg.limit, skip=arg.skip)
        return RetentionPlan(
            due=[
                RetentionDue(session_id=d.session_id, agent_id=d.agent_id, action=d.action)
                for d in due
            ]
        )

    @activity.defn(name=names.ACT_RETENTION_ARCHIVE)
    async def archive(self, arg: RetentionDue) -> RetentionItemOutput:
        try:
            async with heartbeating():
                done = await archive_session(self.sessionmaker, self.store, arg.session_id)
        except (SessionNotFound, SessionNotFinished, ArchiveConflict, ArchiveInvalid) as exc:
            raise ApplicationError(str(exc), type=REFUSED, non_retryable=True) from exc
        return RetentionItemOutput(
            session_id=arg.session_id,
            action="archive",
            detail=f"{done.messages} messages, {done.events} events in {done.sha256[:12]}",
        )

    @activity.defn(name=names.ACT_RETENTION_ERASE)
    async def erase(self, arg: RetentionDue) -> RetentionItemOutput:
        try:
            async with heartbeating():
                receipt = await self.eraser.erase(
                    "session",
                    arg.session_id,
                    by="vigil-retention",
                    reason=f"retention policy of agent {arg.agent_id}",
                )
        except NothingToErase:
            return RetentionItemOutput(
                session_id=arg.session_id, action="erase", detail="already erased"
            )
        return RetentionItemOutput(
            session_id=arg.session_id, action="erase", detail=f"receipt {receipt.id}"
        )
