"""The retention workflow: archive and erase ended sessions as their agents' policies say.

Started by the ``vigil-retention`` Temporal Schedule (overlap: skip). Each batch asks
which sessions are due, then archives or erases them one activity each; a session whose
activity fails is left for the next run and not planned again in this one. Bounded per
run, so its history stays small however much is due.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from vigil.schema import names
from vigil.schema.governance import (
    RetentionDue,
    RetentionItemOutput,
    RetentionPlan,
    RetentionPlanInput,
    RetentionRunInput,
    RetentionRunResult,
)

# Permanent refusals (not finished, changed while archived) are not retried; an outage
# is, a few times, and the next scheduled run takes over after that.
RETENTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
    non_retryable_error_types=["InvalidInput", "RetentionRefused"],
)
PLAN_TIMEOUT = timedelta(minutes=1)
ITEM_TIMEOUT = timedelta(minutes=30)
ITEM_HEARTBEAT = timedelta(minutes=1)


@workflow.defn(name=names.WORKFLOW_RETENTION)
class RetentionRun:
    @workflow.run
    async def run(self, arg: RetentionRunInput) -> RetentionRunResult:
        result = RetentionRunResult()
        for _ in range(arg.max_batches):
            plan = await workflow.execute_activity(
                names.ACT_RETENTION_PLAN,
                RetentionPlanInput(limit=arg.batch_size, skip=list(result.failed)),
                result_type=RetentionPlan,
                start_to_close_timeout=PLAN_TIMEOUT,
                retry_policy=RETENTION_RETRY,
            )
            for item in plan.due:
                await self._apply(item, result)
            if len(plan.due) < arg.batch_size:
                break
        return result

    async def _apply(self, item: RetentionDue, result: RetentionRunResult) -> None:
        activity = (
            names.ACT_RETENTION_ERASE if item.action == "erase" else names.ACT_RETENTION_ARCHIVE
        )
        try:
            await workflow.execute_activity(
                activity,
                item,
                result_type=RetentionItemOutput,
                start_to_close_timeout=ITEM_TIMEOUT,
                heartbeat_timeout=ITEM_HEARTBEAT,
                retry_policy=RETENTION_RETRY,
                summary=f"{item.action} {item.session_id}",
            )
        except ActivityError:
            workflow.logger.warning(
                "retention %s of %s failed; left for the next run", item.action, item.session_id
            )
            result.failed.append(item.session_id)
            return
        if item.action == "erase":
            result.erased += 1
        else:
            result.archived += 1
