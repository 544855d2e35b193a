"""The retry policy of a session's model and tool calls (deterministic, no I/O).

An outage of our own infrastructure must never end a session, so since
``PATCH_INFRA_RETRY`` Temporal retries these calls without limit and the activity counts
its own failures against the budget it is handed (``activities.guard``): outage failures
never count. Sessions started before the patch replay with the old policy, where Temporal
counted every failed attempt.
"""

from __future__ import annotations

import dataclasses

from temporalio import workflow
from temporalio.common import RetryPolicy

from vigil.schema import names


def budgeted(policy: RetryPolicy, attempts: int | None) -> tuple[RetryPolicy, int | None]:
    """(the policy to schedule with, the activity's failure budget or None).

    ``attempts`` overrides the policy's ``maximum_attempts`` (a session's ``ToolPolicy``).
    """
    budget = attempts or policy.maximum_attempts
    if not workflow.patched(names.PATCH_INFRA_RETRY):
        return dataclasses.replace(policy, maximum_attempts=budget), None
    return dataclasses.replace(policy, maximum_attempts=0), budget
