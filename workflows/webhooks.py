"""Webhook notifications of a session's events (deterministic orchestration only).

The session starts one ``WebhookNotify`` child workflow per event, abandoned when the
session closes: the child runs the delivery activity, retried with backoff by Temporal,
so a receiver that is down gets the event later and never holds up or ends the session.
"""

from __future__ import annotations

import contextlib
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

from vigil.schema import names
from vigil.schema.agents import AgentRuntime
from vigil.schema.hooks import NotifyInput, NotifyOutput, WebhookEvent
from vigil.workflows import retries


@workflow.defn(name=names.WORKFLOW_WEBHOOK_NOTIFY)
class WebhookNotify:
    """Deliver one event to every webhook of its agent that listens to it."""

    @workflow.run
    async def run(self, arg: NotifyInput) -> NotifyOutput:
        try:
            out: NotifyOutput = await workflow.execute_activity(
                names.ACT_DELIVER_WEBHOOKS,
                arg,
                result_type=NotifyOutput,
                start_to_close_timeout=retries.WEBHOOK_START_TO_CLOSE,
                schedule_to_close_timeout=retries.WEBHOOK_GIVE_UP,
                retry_policy=retries.WEBHOOK_RETRY,
                summary=f"deliver {arg.event}",
            )
        except ActivityError as exc:
            cause = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc)
            raise ApplicationError(
                f"gave up delivering {arg.event}: {cause}", non_retryable=True
            ) from exc
        return out


async def notify(
    runtime: AgentRuntime | None,
    session_id: str,
    event: WebhookEvent,
    key: str,
    data: dict[str, Any],
    *,
    implied: bool = False,
) -> None:
    """Start the delivery of ``event`` when a webhook of the agent listens to it.

    Only sessions whose agent has webhooks reach ``workflow.patched``: histories from
    before webhooks (no ``webhook_events``) replay without a new command. ``implied``: the
    session is newer than ``PATCH_WEBHOOKS`` (it is not asked).
    """
    if runtime is None or not runtime.webhook_events or event not in runtime.webhook_events:
        return
    if not (implied or workflow.patched(names.PATCH_WEBHOOKS)):
        return
    delivery_id = f"{session_id}:{key}"
    if workflow.patched(names.PATCH_DELIVERY_PER_CHAIN):
        # The chain's first run: the same across hand-overs, new for a session started
        # again under the id after an erasure. Its end: a run id may begin with its time.
        chain = workflow.info().first_execution_run_id[-8:]
        delivery_id = f"{session_id}:{chain}:{key}"
    arg = NotifyInput(
        delivery_id=delivery_id,
        session_id=session_id,
        agent_id=runtime.agent_id,
        agent_version=runtime.version,
        event=event,
        occurred_at=workflow.now(),
        data=data,
    )
    # Already started: this event's delivery is under way.
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await workflow.start_child_workflow(
            names.WORKFLOW_WEBHOOK_NOTIFY,
            arg,
            id=f"{session_id}{names.WEBHOOK_ID_INFIX}{key}",
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=f"webhook {event}",
        )
