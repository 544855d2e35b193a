"""A changed build of the session workflow, deliberately incompatible with the histories of
sessions started by vigil's own: it sleeps on a durable timer before its first step (a
command the old histories never had), with no ``workflow.patched`` guard. Only the worker
versioning tests load it, as the "new build" of a worker deployment."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from vigil.schema import names
from vigil.schema.payloads import SessionResult, StartSessionInput
from vigil.workflows.retention import RetentionRun
from vigil.workflows.session import AgentSession
from vigil.workflows.webhooks import WebhookNotify

NEW_BUILD_TIMER = timedelta(milliseconds=50)


@workflow.defn(name=names.WORKFLOW_SESSION)
class ChangedAgentSession(AgentSession):
    @workflow.run
    async def run(self, arg: StartSessionInput) -> SessionResult:
        await workflow.sleep(NEW_BUILD_TIMER)
        return await super().run(arg)


WORKFLOWS: list[type] = [ChangedAgentSession, RetentionRun, WebhookNotify]
