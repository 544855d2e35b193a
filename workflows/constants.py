"""Retries and timeouts of the session's activities, in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from vigil.schema import names

OPENED_NEXT_SEQ = 1
"""The first seq after a session's opening (the goal is message 0)."""

# Error types that no retry can fix.
NON_RETRYABLE = [names.ERR_PROVIDER_REJECTED, names.ERR_TOOL_CALL_MISSING, names.ERR_INVALID_INPUT]

MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=20,
    non_retryable_error_types=NON_RETRYABLE,
)
MODEL_START_TO_CLOSE = timedelta(minutes=5)
STEP_BATCH_MS = 100
"""How long a model call may go on taking plain steps unless its agent says (``[model]
batch_ms``; ``vigil-step-batches``, ``vigil-default-step-batches``): human input waits
about this, and one step, past the step it would have cut in after."""
STEP_BATCH_STEPS = 32
"""Further steps one model call takes at most."""

TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=NON_RETRYABLE,
)
TOOL_START_TO_CLOSE = timedelta(minutes=10)

# Recording only fails when PostgreSQL is away; keep trying until it is back.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=NON_RETRYABLE,
)
RECORD_START_TO_CLOSE = timedelta(seconds=60)

# PostgreSQL or the object store away: retried until it is back, whatever the activity's
# own budget (activities.guard sets these delays on its InfrastructureUnavailable failures).
INFRA_RETRY_INITIAL = timedelta(seconds=1)
INFRA_RETRY_MAX = timedelta(seconds=30)

DEFAULT_HEARTBEAT = timedelta(seconds=20)

# Catalog tools (Python and MCP) when neither the agent file nor the tool says: the
# tool's own time limit (the activity adds a margin to record the result) and attempts
# for a tool that raises vigil.ToolRetry.
CONVERSATION_IDLE = timedelta(hours=24)
"""How long a conversation waits for its next message when nothing says otherwise."""
TOOL_DEFAULT_TIMEOUT = timedelta(minutes=2)
TOOL_DEFAULT_MAX_ATTEMPTS = 3
TOOL_RECORD_MARGIN = timedelta(seconds=60)
# A call on a tool worker's queue that no worker picks up within this long fails instead
# of waiting forever (the queue probe catches an empty queue sooner).
TOOL_SCHEDULE_TO_START = timedelta(minutes=5)
TOOL_PROBE_START_TO_CLOSE = timedelta(seconds=30)
TOOL_POLLER_FRESH = timedelta(seconds=90)
"""A poller seen within this long counts as alive (long polls last about a minute)."""

STEP_PUBLISH_EVERY = timedelta(seconds=1)
"""With quiet steps, steps run back to back update the step's search attribute at most this
often (workflow time, which moves with each workflow task); status changes, waits and the
end update it at once."""
END_FLUSHES = 3
"""Writes, after a session's end, of the input refused while the end was written: each
may see more arrive; what arrives after the last is not recorded (the workflow's log
says so)."""
