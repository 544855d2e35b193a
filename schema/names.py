"""Stable names that cross process and version boundaries.

Activity, signal, update, query and search-attribute names are explicit strings here so
that renaming a Python function never breaks a running workflow or a user's script.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

WORKFLOW_SESSION = "vigil.AgentSession"
WORKFLOW_PING = "vigil.Ping"

# Search attributes (registered by `vigil stack up`, checked by `vigil doctor`).
SA_AGENT = SearchAttributeKey.for_keyword("VigilAgent")
SA_STATUS = SearchAttributeKey.for_keyword("VigilStatus")
SA_STEP = SearchAttributeKey.for_int("VigilStep")
SA_GOAL = SearchAttributeKey.for_text("VigilGoal")
SA_SCHEDULE = SearchAttributeKey.for_keyword("VigilSchedule")

SEARCH_ATTRIBUTES = (SA_AGENT, SA_STATUS, SA_STEP, SA_GOAL, SA_SCHEDULE)

# The live feed: PostgreSQL LISTEN/NOTIFY channels. Migration 20261130_08 notifies
# FEED_CHANNEL of every new message, new event and status change; the model's tokens go
# to TOKEN_CHANNEL_PREFIX + a digest of the agent id (identifiers are capped at 63 bytes).
FEED_CHANNEL = "vigil_feed"
TOKEN_CHANNEL_PREFIX = "vigil_tokens_"

# Activities
ACT_OPEN_SESSION = "vigil.open_session"
ACT_RECORD = "vigil.record"
ACT_CALL_MODEL = "vigil.call_model"
ACT_RUN_TOOL = "vigil.run_tool"
ACT_REMEMBER = "vigil.remember"
ACT_RESOLVE_AGENT = "vigil.resolve_agent"
ACT_PROBE_TOOL_QUEUE = "vigil.probe_tool_queue"
ACT_DELIVER_WEBHOOKS = "vigil.deliver_webhooks"

# Error types of tool calls (ApplicationError.type), matched by the workflow's routing.
ERR_TOOL_NOT_LOADED = "ToolNotLoaded"
"""Non-retryable: the worker that took the call does not offer the tool."""
ERR_TOOL_UNREACHABLE = "ToolUnreachable"
"""Non-retryable: no worker polls the tool's task queue (from the queue probe)."""
ERR_TOOL_RETRY = "ToolRetry"
"""Retryable: a tool raised vigil.ToolRetry and has attempts left."""

# MCP tool calls carry the call's idempotency key in the request's _meta under this key.
MCP_META_IDEMPOTENCY_KEY = "vigil/idempotency-key"

# Python packages offer tools to workers through this entry point group.
ENTRY_POINT_TOOLS = "vigil.tools"

# Workflow patches (versioning of running sessions; see workflows/session.py)
PATCH_REMEMBER_OUTCOME = "vigil-remember-outcome"
# Continue-as-new while waiting for a human or a timer when history grows (and between
# steps when it passes StartSessionInput.max_history_bytes); the wait is carried over.
PATCH_HAND_OVER_WHILE_WAITING = "vigil-hand-over-while-waiting"
PATCH_INFRA_RETRY = "vigil-infra-retry"
"""Model and tool calls retry without limit while PostgreSQL or the object store is away;
their own failure budget is counted by the activity (``activities.guard``)."""

# Failure types (``ApplicationError.type``): retry policies in workflow history name them.
ERR_INFRA_UNAVAILABLE = "InfrastructureUnavailable"
"""PostgreSQL or the object store is away: retried until it is back, never counted."""
ERR_PROVIDER_TRANSIENT = "ProviderTransient"
ERR_PROVIDER_REJECTED = "ProviderRejected"
ERR_TOOL_CALL_MISSING = "ToolCallMissing"
ERR_INVALID_INPUT = "InvalidInput"
ERR_EMBEDDER_MISMATCH = "EmbedderMismatch"
"""The agent's memories come from another embedder than the worker's (non-retryable)."""
ERR_WORKER_NOT_READY = "WorkerNotReady"
"""A low-latency model call on a worker not set up for it (its connection, credential or
script): a local activity cannot move to another worker, so the workflow calls it again as
a regular activity, which waits for a worker that can serve it (``PATCH_LOCAL_CALL_MOVES``)."""
ERR_ACTIVITY_FAILED = "ActivityFailed"
"""Anything unexpected (a bug): counted against the activity's failure budget."""
ERR_SESSION_FAILED = "SessionFailed"
ERR_ENDED_IN_RECORD = "EndedInRecord"
"""A write for a session whose record holds an end this write's run did not take (an end
written in a workflow task Temporal refused, whose retry took a signal first): nothing is
written, and the session ends as recorded. Details: the recorded status, its summary."""
# Resolve the agent's pinned definition once per run; tool catalog, per-agent model,
# approvals bound to a digest of the call.
PATCH_AGENT_DEFINITIONS = "vigil-agent-definitions"
# Probe a tool worker's queue before its first call; a call nobody serves (no poller,
# ToolNotLoaded, schedule-to-start timeout) becomes the call's tool error, not a failure.
PATCH_TOOL_WORKERS = "vigil-tool-workers"
# Tell the agent's webhooks when an approval is requested, a human is asked, or the session
# ends: a child workflow per event (abandoned on close) delivers it, so a receiver that is
# down never holds up or ends the session.
PATCH_WEBHOOKS = "vigil-webhooks"
# A cancel's event and summary name who cancelled and why (read from Temporal's cancel
# reason, see schema/cancel_reason.py); older runs recorded "cancelled by a human".
PATCH_CANCEL_ACTOR = "vigil-cancel-actor"
# One server round trip per step on the usual path: call_model runs the reply's leading
# tool calls that need no approval, no other queue and no workflow (each recorded on its
# own seq as run_tool would), queued records ride in its input, and an agent whose model
# settings say ``execution = "local"`` has its model calls run as local activities.
PATCH_FOLDED_STEP = "vigil-folded-step"
# The low-latency mode's bookkeeping as local activities too: opening the session, its
# records and the memory of its outcome. Still through the server: the agent's
# resolution, the tool calls a step does not fold (and a tool queue's probe), webhooks.
PATCH_LOCAL_RECORDS = "vigil-local-records"
# Fewer activities at a session's start and end: the agent's resolution is a local
# activity, opening the session rides with its first records (the first model call, or the
# first record before a wait), and the memory of its outcome with its last record.
PATCH_LEAN_BOOKKEEPING = "vigil-lean-bookkeeping"
# The bookkeeping of every new session as local activities, in the default mode too: the
# records written between steps, before a wait and at the end, and the outcome's memory
# when it cannot ride with the last record. Asked first by new sessions; it implies lean
# bookkeeping and every patch before it.
PATCH_LOCAL_BOOKKEEPING = "vigil-local-bookkeeping"
# The step's search attribute (VigilStep) updated when the session settles or changes
# status (a wait, a pause, the end) and otherwise at most once a second of workflow time,
# not after every step: each update is a history event and a visibility write on the
# server. Asked first by new sessions; it implies local bookkeeping and every patch before.
PATCH_QUIET_STEPS = "vigil-quiet-steps"
# A local activity's failure reaches the session as a regular activity's does (an
# ActivityError around it), so it ends the session with its record instead of failing the
# workflow bare. Asked only when a local activity fails (implied by lean bookkeeping).
PATCH_LOCAL_FAILURES = "vigil-local-failures"
# An approval's decision is written before the call it decided runs; before, it went with
# the next record, after the tool's result. Asked once a decision is made, so only
# sessions that decide an approval carry it.
PATCH_DECISION_FIRST = "vigil-decision-first"
# A control signal whose payload could not be decrypted (an unknown key id, a payload
# altered or not sealed at all) is refused and recorded like any malformed input; the
# refusal of the session's Nth signal leaves the marker PATCH_UNDECRYPTABLE_SIGNAL + "-N",
# so a replay refuses it again even on a worker that has since been given the key.
PATCH_UNDECRYPTABLE_SIGNAL = "vigil-undecryptable-signal"
# A conversation that receives no message for its idle time (the agent definition's
# ``conversation_idle_seconds``, 24 hours by default) ends completed. Asked when a
# conversation first waits for a message, so only conversations carry it; those that
# waited before it keep waiting until their deadline or budget.
PATCH_CONVERSATION_IDLE = "vigil-conversation-idle"
# A message that joins a conversation's transcript after the model's answer was asked for
# (sent while the model was answering, or during a hand-over) is answered by the next
# step; before, the conversation waited for yet another message. Asked only then.
PATCH_CONVERSATION_LATE_MESSAGE = "vigil-conversation-late-message"
# A message (or a new goal) taken while the step that would end the session ran (a final
# answer, the finish tool) is answered by one more step instead of being left out; a
# session ending for another reason (cancel, a budget, a failure) writes it into the
# transcript before its end. Before, such a message was acknowledged and then dropped.
# Asked only then.
PATCH_MESSAGE_BEFORE_END = "vigil-message-before-end"
# A redirect signal is refused, as its update and a message are, when the queue for the
# next step is full; before, the signal's new goal joined the queue past its limit (what
# the next run's input carries). Asked only when it is full.
PATCH_REDIRECT_QUEUE_LIMIT = "vigil-redirect-queue-limit"
# A Temporal cancel that lands while a session that has ended writes its last records
# (its end, final status, outcome's memory) no longer drops them: they are written again and
# the session completes as it ended. Asked only then.
PATCH_END_OUTLIVES_CANCEL = "vigil-end-outlives-cancel"
# A redirect back to the version a session runs, before an earlier redirect's move to
# another version was made, cancels that move (the last redirect holds); before, the move
# was made anyway. Asked only then.
PATCH_LAST_REDIRECT_WINS = "vigil-last-redirect-wins"
# Signals a run handles before its workflow code starts (its first task: a signal sent with
# the start, or one that reached a run that took over a wait, or a run reset to its first
# task) are checked as any later one: the run settles which patches it takes first. A
# wake taken there wakes the sleep the run took over; before, it was recorded and then
# forgotten. Asked only then.
PATCH_INPUT_BEFORE_RUN = "vigil-input-before-run"
# A cancel that reaches a session while its run reads its agent's definition (a cancel
# sent before a worker first ran it) ends it as any cancel does: the record holds the
# session, ended cancelled; before, the workflow was cancelled with nothing recorded.
# Asked only then.
PATCH_CANCEL_AT_THE_START = "vigil-cancel-at-the-start"
# A redirect back to the version a session runs, while it reads the version an earlier
# redirect moves it to, moves it back once that move is made (the last redirect holds);
# before, it was taken as no move and the session went on with the other version. Asked
# only then.
PATCH_REDIRECT_BACK_DURING_MOVE = "vigil-redirect-back-during-move"
# A signal that reaches a session once it has ended (while its last records are written,
# its webhooks told, its outcome remembered) is refused and recorded as such, with who
# sent it and its text; before, it was applied to a session that would never act on it
# and never recorded. Asked only then.
PATCH_INPUT_AT_THE_END = "vigil-input-at-the-end"
# A low-latency session's model call may go on to the next steps itself while each is a
# plain folded step (every tool call of the reply answered in the call, none that the
# workflow handles), for a short window: one local activity and one activation for
# several steps. Asked where a low-latency step's model call is made.
PATCH_STEP_BATCHES = "vigil-step-batches"
# The search attributes a run starts with already (vigil's client sets agent, status, step
# and goal when it starts a session; a run continued as new has its last run's) are not
# set again, and an update carries only the attributes it changes: each update is a
# history event and a visibility write on the server. Asked first by new sessions; it
# implies quiet steps and every patch before them, and step batches without asking.
PATCH_START_ATTRIBUTES = "vigil-start-attributes"
# A low-latency model call that its worker cannot serve as set up (``ERR_WORKER_NOT_READY``)
# is called again as a regular activity, which a worker that can serve it takes; it was
# retried as a local activity on the same worker, for good. Asked only then.
PATCH_LOCAL_CALL_MOVES = "vigil-local-call-moves"
# A signal whose one-line text (a redirect's goal, a reason, a note) holds NUL is refused
# as input, as its update is by the validator; it was taken, and the record's plain
# columns kept the NUL rewritten as ``\0``. Asked only when such a signal arrives.
PATCH_LINE_TEXT_NUL = "vigil-line-text-nul"
# A signal's edited arguments with an integer too large for a float to hold exactly (as
# ``1e30``), which JSON Schema counts as an integer and no Python tool can take, are refused
# (``schema.arguments``); they were taken, and the tool failed. Asked only then.
PATCH_WHOLE_NUMBERS = "vigil-whole-numbers"
# A signal's (or an update's) edited arguments are checked against the tool's schema with
# its patterns matched in linear time (RE2, ``schema.patterns``): Python's ``re`` took a
# minute of the worker's loop for ``^(a+)+$`` and thirty a's. Asked when edited arguments
# are checked outside a validator; histories from before replay with ``re``.
PATCH_LINEAR_PATTERNS = "vigil-linear-patterns"
# A call that meets one of its tool's ``approve_when`` rules waits for approval when the
# tool says ``approval = "never"`` too (the rule wins, as the agent file's reference says),
# and such a tool is no longer run inside the model call (folded). Before, "never" went
# before the rules. Asked only where an allowed tool is "never" with rules: a session that
# asked it first under this code takes the rules (one under way too, from then on); one
# whose history answered it before keeps "never" for that run.
PATCH_RULES_OVER_NEVER = "vigil-rules-over-never"
# A webhook delivery's id names the session's chain of runs too (``<session>:<the last 8
# characters of its first run's id>:<event key>``): a session erased and started again
# under its id sent the same ids, which a receiver that drops repeats took as sent. Asked
# where an event is delivered: a run that delivered one before keeps the older ids.
PATCH_DELIVERY_PER_CHAIN = "vigil-delivery-per-chain"
# A default-mode session's model call (a regular activity) may go on to the next steps
# itself while each is a plain folded step, as a low-latency call does (step batches): one
# activity task and one activation for several steps. Asked first by new sessions; it
# implies the start's attributes and every patch they imply.
PATCH_DEFAULT_STEP_BATCHES = "vigil-default-step-batches"
# A ``resume`` signal to a session that is not paused, or a ``pause`` signal to one that
# is, is refused as input (``input_rejected``, with the reason its update's validator
# gives); it was dropped without a record. Asked only when such a signal arrives.
PATCH_PAUSE_STATE_SIGNALS = "vigil-pause-state-signals"
# A tool call whose ``run_tool`` activity fails for good (its failure budget spent, by
# errors or by attempts that timed out) is recorded as the call's tool error, which the
# model reads, and the session goes on; it ended the session failed. Asked only then.
PATCH_TOOL_FAILED_FOR_GOOD = "vigil-tool-failed-for-good"
# A step a batch handed back because its provider asked for time (a status it may retry,
# as 429 or 503, with Retry-After) is taken again once that time passed, on a wait bounded
# by the session's deadline; it was taken at once. Asked only then.
PATCH_HANDED_BACK_WAITS = "vigil-handed-back-waits"
# A decision (approve, reject) a session takes after its approval expired is refused as
# input: the approval timeout decides it. A worker that was down when the wait's timer
# fired took the signals that came after it first, and ran a call approved too late.
# Asked only then.
PATCH_NO_DECISION_PAST_EXPIRY = "vigil-no-decision-past-expiry"
# A run takes at least one step before it hands over: a start that passed ``steps_per_run``
# of 0 or less unchecked (a plain Temporal client) handed over before every step, for
# ever, taking none. Asked only for such a start.
PATCH_RUNS_TAKE_A_STEP = "vigil-runs-take-a-step"
# A redirect's goal fills the ``{goal}`` of the agent's system prompt, as the start's did;
# the prompt kept the start's goal until the next run (or a move to another version).
# Asked only by a redirect of a session whose prompt holds the goal.
PATCH_PROMPT_FOLLOWS_GOAL = "vigil-prompt-follows-goal"
# A paused conversation does not end idle: its idle time passing while paused holds it
# until the resume, after which it waits its whole idle time again. It ended `completed`
# under the pause. Asked only then.
PATCH_PAUSE_HOLDS_IDLE = "vigil-pause-holds-idle"
# A signal's edited arguments holding NaN or Infinity (a raw Temporal client's JSON) are
# refused, as the update's validator refuses them; they were taken, and the tool then
# refused the call as not the one approved (its digest held NaN, its input null), which
# failed the session. Asked only when such arguments arrive.
PATCH_FINITE_EDITS = "vigil-finite-edits"
# A wait (an approval, a sleep, a question) in a step batch's later step hands over to the
# next run with that step: it carried the batch's first step, so the call it waited for
# was recorded at that step, and its event, keyed by step and index, met the key of the
# first step's call and was dropped. Asked only then.
PATCH_BATCH_WAIT_STEP = "vigil-batch-wait-step"
# An ask_human question is answered by the first message sent after it was asked; one
# queued before it (sent while the model call that asked it ran, its sender told "queued
# for the next step") answered it, unseen by anyone. Asked only when messages wait then.
PATCH_ASK_AFTER_QUEUED = "vigil-ask-after-queued"
# A redirect of the goal alone that comes while a move to another version is read fills
# the moved prompt's goal: the prompt kept the goal the move was read with until the next
# run. Asked only then.
PATCH_MOVE_TAKES_LATER_GOAL = "vigil-move-takes-later-goal"
# A step handed back to wait out its provider's Retry-After keeps waiting in the next run
# when the session hands over meanwhile (its history grew heavy): the next run asked the
# provider again at once. Asked only when a handed-back step waits.
PATCH_CARRIED_PROVIDER_WAIT = "vigil-carried-provider-wait"
ERR_EARLIER_SESSION = "EarlierSession"
"""A session's opening found its id's record opened by an earlier workflow (started at
another time, closed since): the run ends at once, failed, writing nothing to that record."""
NO_REPLY = "[no reply recorded: "
"""How the assistant message begins that a session's end writes in the place of a model
call's reply that never came (the transcript stays whole): no answer to anyone."""
REFUSED_ENDED = "the session has ended"
"""How a session's validator begins its refusal of a control once the session has ended
(while its last records are written): a keyed message then goes to the key's next
session (workers/keyed.py)."""
WORKFLOW_WEBHOOK_NOTIFY = "vigil.WebhookNotify"
WEBHOOK_ID_INFIX = "~webhook~"
"""A session's delivery of an event to its webhooks is the workflow ``SESSION~webhook~KEY``."""
ERR_WEBHOOK_UNDELIVERED = "WebhookUndelivered"
"""Retryable: some webhook of the event did not take the delivery yet."""

# What the payload codec (workers/codec.py) hands on in place of a payload it cannot
# decrypt: no converter turns it into a value, so whoever needs the value fails with the
# reason (the metadata UNDECRYPTABLE_REASON), and a control signal or update is refused.
UNDECRYPTABLE_ENCODING = b"binary/undecryptable"
UNDECRYPTABLE_REASON = "vigil-undecryptable-reason"

# Human control: signals, updates, query
SIG_APPROVE = "approve"
SIG_REJECT = "reject"
SIG_PAUSE = "pause"
SIG_RESUME = "resume"
SIG_MESSAGE = "message"
SIG_REDIRECT = "redirect"
SIG_WAKE = "wake"
UPD_APPROVE = "approve_update"
UPD_REJECT = "reject_update"
UPD_PAUSE = "pause_update"
UPD_RESUME = "resume_update"
UPD_MESSAGE = "message_update"
UPD_REDIRECT = "redirect_update"
UPD_WAKE = "wake_update"
QUERY_STATE = "state"

# Data governance: the retention workflow, its activities and its schedule.
WORKFLOW_RETENTION = "vigil.Retention"
ACT_RETENTION_PLAN = "vigil.retention_plan"
ACT_RETENTION_ARCHIVE = "vigil.retention_archive"
ACT_RETENTION_ERASE = "vigil.retention_erase"
SCHEDULE_RETENTION = "vigil-retention"
# Error types (ApplicationError.type) that cross process boundaries.
ERR_AGENT_VERSION_MISSING = "AgentVersionMissing"
ERR_APPROVAL_MISMATCH = "ApprovalMismatch"
ERR_TOOL_NOT_SERVED = "ToolNotServed"
