"""The retry policy of a session's model and tool calls (deterministic, no I/O).

An outage of our own infrastructure must never end a session, so since
``PATCH_INFRA_RETRY`` Temporal retries these calls without limit and the activity counts
its own failures against the budget it is handed (``activities.guard``): outage failures
never count. Sessions started before the patch replay with the old policy, where Temporal
counted every failed attempt.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from vigil.schema import names


def budgeted(
    policy: RetryPolicy, attempts: int | None, *, implied: bool = False
) -> tuple[RetryPolicy, int | None]:
    """(the policy to schedule with, the activity's failure budget or None).

    ``attempts`` overrides the policy's ``maximum_attempts`` (a session's ``ToolPolicy``).
    ``implied``: the session is newer than ``PATCH_INFRA_RETRY`` (it is not asked).
    """
    budget = attempts or policy.maximum_attempts
    if not (implied or workflow.patched(names.PATCH_INFRA_RETRY)):
        return dataclasses.replace(policy, maximum_attempts=budget), None
    return dataclasses.replace(policy, maximum_attempts=0), budget


# Webhook deliveries: Temporal retries the delivery activity with backoff until every
# webhook took it (or refused it for good), for up to WEBHOOK_GIVE_UP: a receiver that is
# down for a while gets it later. Each attempt is bounded and recorded.
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=0,
)
WEBHOOK_START_TO_CLOSE = timedelta(seconds=60)
WEBHOOK_GIVE_UP = timedelta(days=3)
