"""Payloads that cross the workflow/activity boundary and the public control contract.

These pydantic models are durable contracts: a running workflow must still decode the
payloads written by older code, so fields are only ever added, and added as optional.
No SQLAlchemy, no I/O: workflow code imports this module through the sandbox.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Signal text over this size is refused (the update validator says so; a signal is recorded
# as a rejected input), so one human message can never bloat workflow history.
MAX_HUMAN_TEXT = 32 * 1024
PREVIEW_CHARS = 500


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class SessionStatus(StrEnum):
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    WAITING_HUMAN = "waiting_human"
    SLEEPING = "sleeping"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXHAUSTED = "budget_exhausted"
    TIMED_OUT = "timed_out"
    TERMINATED = "terminated"
    """Ended outside vigil's control (terminated, reset away or deleted in Temporal); set by
    the reconciler, never by the workflow itself."""


FINAL_STATUSES = frozenset(
    {
        SessionStatus.COMPLETED,
        SessionStatus.FAILED,
        SessionStatus.CANCELLED,
        SessionStatus.BUDGET_EXHAUSTED,
        SessionStatus.TIMED_OUT,
        SessionStatus.TERMINATED,
    }
)


class Budget(Payload):
    """Limits of one session; any of them ends it cleanly with a final summary.

    vigil's faces refuse out-of-range limits at start (``schema/limits.py``: at most 100
    years of wall clock, finite numbers, counts up to 2**53); the workflow takes any value
    without failing (``workflows/times.py``), since anyone can start one."""

    max_steps: int = 50
    """Model calls allowed in the whole session (across continue-as-new)."""
    max_tokens: int | None = None
    """Input plus output tokens across all model calls."""
    max_cost_usd: float | None = None
    max_seconds: float | None = None
    """Wall-clock limit from the session's start; becomes ``deadline``."""
    deadline: datetime | None = None
    """Absolute wall-clock deadline (UTC; one without a time zone is read as UTC)."""


class ToolPolicy(Payload):
    """Which tools the session may use and which need a human's approval."""

    allowed: list[str] | None = None
    """Tool names the model may call; None means every registered tool. ``finish`` is
    offered whatever this says (workflows/agents.py ``tool_names``)."""
    require_approval: list[str] | None = None
    """Tools that wait for approval; None means the default (external effects or risky)."""
    approval_timeout_seconds: float = 24 * 3600
    on_approval_timeout: Literal["reject", "approve", "fail"] = "reject"
    ask_human_timeout_seconds: float = 7 * 24 * 3600
    max_malformed_replies: int = 3
    """Consecutive malformed model replies tolerated before the session fails."""
    model_max_attempts: int | None = Field(default=None, ge=1)
    """Attempts of one model call while the provider fails (None: the default, 20)."""
    tool_max_attempts: int | None = Field(default=None, ge=1)
    """Attempts of one tool call while it fails (None: the default, 10). An outage of
    PostgreSQL or the object store counts against neither: it is waited out."""


class SessionCarry(Payload):
    """State handed from one run to the next across continue-as-new."""

    step: int = 0
    next_seq: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    run_index: int = 1
    paused: bool = False
    paused_by: str | None = None
    goal: str = ""
    deadline: datetime | None = None
    malformed_streak: int = 0
    last_message: str = ""
    approvals_seen: int = 0
    waiting: CarriedWait | None = None
    """The wait this run took over from the last one (it handed over while waiting)."""
    inbox: list[QueuedMessage] = Field(default_factory=list)
    """Human messages not yet in the transcript (they join it between steps)."""
    rejected_inputs: int = 0
    taken_requests: list[str] = Field(default_factory=list)
    """The named requests the runs before took, newest last (a request sent again reaches
    the next run: taken once all the same)."""
    taken_answers: list[Ack] = Field(default_factory=list)
    """The first answer to each of ``taken_requests``, in the same order (an update of one
    sent again is answered with it; a carry from before it was kept has none)."""
    agent_version: int | None = None
    """The agent definition's version this session runs (None: an agent with no definition)."""
    agent_pinned: bool = False
    """True once the first run resolved the agent: later runs keep ``agent_version``."""
    agent_switch: tuple[int, str] | None = None
    """(version, by) of a redirect to another agent version not yet applied."""
    awaiting_message: bool = False
    """A conversation answered its last message and waits for the next one."""
    idle_until: datetime | None = None
    """When a conversation waiting for its next message ends idle (None: it waits
    without this bound, as conversations did before ``PATCH_CONVERSATION_IDLE``)."""
    step_not_before: datetime | None = None
    """A step handed back for its provider's Retry-After is not taken before this time
    (set while it waits, so a run that hands over meanwhile hands the wait on)."""


MAX_CONTEXT_MESSAGES = 10_000
"""The most recent messages a model call may be given (an agent's ``context.messages``, a
start's ``context_messages``)."""


class StartSessionInput(Payload):
    """What `vigil start` / the client / a schedule sends to start an AgentSession."""

    agent_id: str = Field(min_length=1, max_length=200)
    goal: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)
    system_prompt: str | None = None
    budget: Budget = Field(default_factory=Budget)
    policy: ToolPolicy = Field(default_factory=ToolPolicy)
    schedule_id: str | None = None
    steps_per_run: int = 200
    """Continue-as-new after this many steps in one run (or earlier when Temporal suggests)."""
    context_messages: int = 40
    """How many recent messages the model sees (older ones are summarised by memory)."""
    heartbeat_seconds: float = 20.0
    """How soon a lost worker's model or tool call is noticed and retried elsewhere."""
    max_tokens_per_call: int | None = None
    max_history_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """Continue-as-new once a run's history is this large (or when Temporal suggests it),
    between steps and while waiting for a human or a timer."""
    carry: SessionCarry | None = None
    """Set by the workflow itself on continue-as-new; never by users."""
    agent_version: int | None = None
    """Run this version of the agent's definition; its newest at the first run when unset."""
    overrides: list[str] | None = None
    """The settings of this input that win over the agent definition's: ``budget`` or
    ``budget.<field>``, ``system_prompt``, ``context_messages``, ``max_tokens_per_call``,
    ``policy.approval_timeout_seconds``, ``conversation_idle_seconds``. Unlisted ones come
    from the definition (when the agent has one); `vigil start` and the client list the
    options a user gave."""
    conversation: bool = False
    """A conversation (the session of a key): a reply without a tool call answers the
    last message, and the session waits for the next one instead of ending; the agent
    ends it with ``finish`` (or a budget, the deadline, a cancel does), or no message for
    ``conversation_idle_seconds`` does."""
    conversation_idle_seconds: float | None = Field(default=None, gt=0)
    """How long a conversation waits for its next message before it ends completed; the
    agent definition's when unset (and not in ``overrides``), else 24 hours."""
    runtime: dict[str, Any] | None = None
    """The agent definition as vigil's client resolved it for this start (an
    ``AgentRuntime``'s JSON): the session's first run takes it instead of reading it, one
    local activity less. Sessions started without it (plain Temporal starts, schedules)
    read their definition themselves; a runtime for another agent or version is ignored."""
    temporal_address: str | None = None
    """Where the starter reached Temporal: the ``temporal`` commands the session shows in
    Temporal UI name it (``--address``), so they work as pasted on any port."""


class SessionResult(Payload):
    session_id: str
    status: SessionStatus
    steps: int
    summary: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    runs: int = 1


# --- the human control contract (signals and updates) -------------------------------------

MAX_REQUEST_ID = 64
"""The longest id a control's sender may give it."""


class Control(Payload):
    """What every control carries besides its own fields."""

    request_id: str | None = Field(default=None, max_length=MAX_REQUEST_ID)
    """The sender's id for this request: sent again under it (as a signal, once its update
    went unanswered), the session takes it once."""


class ApproveInput(Control):
    approval_id: str
    by: str = "unknown"
    note: str | None = None
    edited_arguments: dict[str, Any] | None = None
    """Approve with the tool call's arguments replaced by these."""
    digest: str | None = None
    """When given, the approval holds only if the pending call still has this digest."""


class RejectInput(Control):
    approval_id: str
    by: str = "unknown"
    reason: str = ""


class PauseInput(Control):
    by: str = "unknown"
    reason: str = ""


class ResumeInput(Control):
    by: str = "unknown"


class MessageInput(Control):
    text: str
    by: str = "unknown"


class RedirectInput(Control):
    goal: str
    by: str = "unknown"
    agent_version: int | None = None
    """Also move the session to this version of its agent's definition."""


class WakeInput(Control):
    by: str = "unknown"
    reason: str = ""


class Ack(Payload):
    """What an update returns."""

    accepted: bool
    status: SessionStatus
    message: str = ""
    paused: bool | None = None
    """Whether the session is paused after the action (a pause that lands while it waits
    for a human or a timer takes effect once that wait ends: ``status`` stays the wait's)."""
    queued: bool = False
    """Not taken yet: no worker answered the update in time, and the request was left with
    Temporal as a signal (in the session's history), taken when a worker runs the session
    (set by the client, never by the session)."""


class PendingApproval(Payload):
    approval_id: str
    tool: str
    arguments_preview: str
    step: int
    requested_at: datetime
    expires_at: datetime
    digest: str | None = None
    """sha256 of the call's canonical JSON (tool name and arguments): what is approved."""


class SessionState(Payload):
    """The `state` query."""

    session_id: str
    agent_id: str
    goal: str
    status: SessionStatus
    step: int
    paused: bool
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    budget: Budget = Field(default_factory=Budget)
    last_message: str = ""
    run_index: int = 1
    rejected_inputs: int = 0
    waiting_for: str | None = None
    agent_version: int | None = None
    """The agent definition's version this session runs (None: no definition)."""


# --- activity payloads ------------------------------------------------------------------


class MessageIn(Payload):
    seq: int
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    step: int = 0
    name: str | None = None
    tool_call_id: str | None = None


class EventIn(Payload):
    key: str
    kind: str
    step: int = 0
    actor: str | None = None
    reason: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class SessionUpdate(Payload):
    status: SessionStatus | None = None
    step: int | None = None
    goal: str | None = None
    summary: str | None = None
    finished: bool = False
    run_count: int | None = None
    agent_version: int | None = None
    system_prompt: str | None = None


class OpenSessionInput(Payload):
    session_id: str
    agent_id: str
    goal: str
    system_prompt: str | None = None
    schedule_id: str | None = None
    run_index: int = 1
    agent_version: int | None = None
    started_at: datetime | None = None
    """When the session was started (its workflow's start): the record's ``created_at``,
    even when no worker picked it up until later."""


class OpenSessionOutput(Payload):
    next_seq: int
    created: bool


class RecordInput(Payload):
    session_id: str
    agent_id: str
    messages: list[MessageIn] = Field(default_factory=list)
    events: list[EventIn] = Field(default_factory=list)
    session: SessionUpdate | None = None
    open_step_seq: int | None = None
    """The assistant seq of a step the session ended inside (folded steps): the tool calls
    of a reply recorded there get an answer each, and this batch's later messages move
    after them, so the transcript has no gap whatever the model activity wrote."""
    open: OpenSessionInput | None = None
    """The session to open first (its row, the goal's message), as ``open_session``
    does; idempotent (sessions under ``PATCH_LEAN_BOOKKEEPING``)."""
    remember: RememberInput | None = None
    """The outcome to remember once the records are written, as ``remember`` does: tried
    once (``activities.session.REMEMBER_INLINE_SECONDS``). Its failure never fails the
    records: it is logged and told in ``RecordOutput.remembered``, and the workflow then
    runs the ``remember`` activity of its own."""


class RecordOutput(Payload):
    inserted_messages: int
    inserted_events: int
    remembered: bool | None = None
    """Whether the outcome carried in ``remember`` was kept (None: none was carried)."""
    last_step: int | None = None
    """With ``open_step_seq``: the last step the record holds from that step on (a
    low-latency batch's call may have recorded steps its workflow never heard of)."""


class CallModelInput(Payload):
    session_id: str
    agent_id: str
    step: int
    seq: int
    """Where the assistant reply is written; the activity is idempotent on it."""
    allowed_tools: list[str]
    context_messages: int = 40
    max_tokens: int | None = None
    max_failures: int | None = None
    """The call's own failure budget, counted by the activity (Temporal then retries
    without limit, so an outage of PostgreSQL or the object store is waited out). None:
    Temporal's retry policy counts every attempt (sessions from before this field)."""
    agent_version: int | None = None
    """The pinned agent version: its tool catalog gives the specs, schemas and rules."""
    connection: str | None = None
    """The named model connection; the worker's default provider when unset."""
    model: str | None = None
    temperature: float | None = None
    fallback: str | None = None
    """Connection used once the first keeps failing."""
    context_tokens: int | None = None
    recall: int | None = None
    fold_tools: list[str] | None = None
    """Tools this activity runs itself (folded step): the reply's leading calls to them,
    call ``i`` recorded at seq ``seq + 1 + i`` exactly as run_tool records it; right after
    the reply, or with it when the call changes nothing. None: the workflow runs every
    call (sessions from before folding)."""
    records: RecordInput | None = None
    """Queued messages, events and session changes, written before the context is read
    (instead of a record activity of their own)."""
    batch: StepBatch | None = None
    """The further steps this call may take itself (a low-latency step batch); None: this
    step only."""


class StepBatch(Payload):
    """How far a model call may go past its own step (either mode): steps that follow each
    other while each is plain (its reply's tool calls all answered in the call, none a
    workflow-handled tool) and the session's budgets allow another, as its workflow would
    judge them between steps."""

    steps: int
    """Further steps at most: the step budget and the run's steps, whichever ends first."""
    window_ms: int
    """No further step starts once the batch has run this long."""
    tokens_used: int = 0
    """Tokens the session has used before this call."""
    max_tokens: int | None = None
    cost_used: float = 0.0
    """Cost the session has used before this call, summed in step order as the workflow
    sums it (the same float)."""
    max_cost_usd: float | None = None
    deadline: datetime | None = None
    """The session's deadline: no further step starts once the worker's clock has passed
    it (the workflow's clock, which moves only between workflow tasks, would let one)."""


class ToolCallRef(Payload):
    """A tool call as the workflow sees it: the arguments stay in PostgreSQL."""

    index: int
    call_id: str
    name: str
    valid: bool
    error: str | None = None
    arguments_preview: str = ""
    digest: str | None = None
    """sha256 of the call's canonical JSON (tool name and arguments)."""
    rule_matched: bool | None = None
    """Whether one of the tool's ``approve_when`` rules matched the arguments."""


class CallModelOutput(Payload):
    seq: int
    content_preview: str
    finish_reason: str
    tool_calls: list[ToolCallRef] = Field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    replayed: bool = False
    """True when the reply was already recorded (a retry after a crash): no new model call."""
    folded: list[RunToolOutput] = Field(default_factory=list)
    """Results of the leading tool calls this activity ran (``fold_tools``), in call order."""
    more: list[CallModelOutput] = Field(default_factory=list)
    """The further steps of a batch (``CallModelInput.batch``), in order; each of them
    but the last is plain."""
    handed_back: bool = False
    """The batch's next step was begun and failed: the workflow takes it at once, before
    anything else, as a retry of this call would have (it may be recorded already)."""
    handed_back_after: float | None = None
    """Seconds the handed-back step's failure asked to be tried again after (a provider's
    Retry-After): the workflow waits them out first, as a retry of the call would."""


class RememberInput(Payload):
    """The session's outcome, for the memory pipeline at its end."""

    session_id: str
    agent_id: str
    goal: str
    status: SessionStatus
    summary: str
    steps: int = 0
    max_failures: int | None = None
    """As ``CallModelInput.max_failures``."""


class RememberOutput(Payload):
    memory_id: int | None = None
    action: str = "skipped"


class RunToolInput(Payload):
    session_id: str
    agent_id: str
    step: int
    seq: int
    """Where the tool result message is written; idempotent on it."""
    model_seq: int
    """The assistant message holding the call (its arguments are read from there)."""
    call_index: int
    edited_arguments: dict[str, Any] | None = None
    rejected_reason: str | None = None
    """Write this refusal as the tool's result instead of running it."""
    max_failures: int | None = None
    """As ``CallModelInput.max_failures``."""
    agent_version: int | None = None
    approved_digest: str | None = None
    """A human approved exactly this call: anything else is refused, never run."""
    edited_by: str | None = None
    """Who edited ``edited_arguments`` (shown with the result in every view)."""


class ToolControl(Payload):
    """What a workflow-handled tool asks of the workflow."""

    kind: Literal["finish", "wait_until", "ask_human"]
    summary: str | None = None
    succeeded: bool | None = None
    """``finish``: False when the agent says its goal was not reached (the session ends
    failed); None (not said, or a call recorded before it could be said) as True."""
    wake_at: datetime | None = None
    seconds: float | None = None
    question: str | None = None


class RunToolOutput(Payload):
    seq: int
    ok: bool
    preview: str
    recorded: bool = True
    """False for workflow-handled tools: the workflow records their result itself."""
    control: ToolControl | None = None
    artifact_sha256: str | None = None


class QueuedMessage(Payload):
    """A human message waiting for the next step, carried across continue-as-new."""

    text: str
    by: str
    at: datetime


class CarriedWait(Payload):
    """The tool call a run was waiting on (a human's approval or reply, a timer) when it
    handed over to the next run; that run waits on, then finishes the step."""

    kind: Literal["approval", "sleep", "ask_human"]
    step: int
    model_seq: int
    """The assistant message holding the step's tool calls."""
    seq: int
    """The seq reserved for this call's result."""
    call: ToolCallRef
    later_calls: list[ToolCallRef] = Field(default_factory=list)
    """The step's calls after this one, not run yet."""
    approval: PendingApproval | None = None
    wake_at: datetime | None = None
    question: str | None = None
    expires_at: datetime | None = None
    """When an ask_human question stops waiting for a reply."""
    queued_before: int = 0
    """The messages queued before the ask_human question was asked (the carried inbox's
    first ones): they wait for the next step; the reply is the first after them."""


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_HIDDEN = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Mn", "Me"})
"""Character categories that hide, reorder or disguise text (controls, bidi and zero-width
marks, private, surrogate and unassigned code points, combining marks): kept escaped
where a person reads."""
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\u2800\uffa0\u17b4\u17b5")
"""Letters and symbols that print as nothing (Hangul fillers, the blank Braille cell)."""
_WORD = re.compile(r"\w+")


def readable_arguments(raw: str) -> str:
    """A call's arguments as a person deciding on them reads them: the JSON object the
    model sent, with its characters as written where it escaped them, but those that hide
    or reorder text escaped. Anything but a JSON object is left as it came. Pure."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return raw
    if not isinstance(value, dict):
        return raw
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return raw
    shown = "".join(
        _json_escape(ch) if unicodedata.category(ch) in _HIDDEN or ch in _BLANK_LETTERS else ch
        for ch in text
    )
    # A word that mixes Latin letters with another script's (`\u0430pple`: a Cyrillic a)
    # may pass for another: its letters that are not Latin stay escaped (`münchen` is
    # Latin throughout, `пароль` Cyrillic throughout: both shown as written).
    return _WORD.sub(_mixed_escaped, shown)


def _latin(ch: str) -> bool:
    return ch.isascii() or unicodedata.name(ch, "").startswith("LATIN")


def _mixed_escaped(word: re.Match[str]) -> str:
    text = word.group(0)
    letters = [ch for ch in text if ch.isalpha()]
    if all(_latin(ch) for ch in letters) or not any(_latin(ch) for ch in letters):
        return text
    return "".join(ch if _latin(ch) or not ch.isalpha() else _json_escape(ch) for ch in text)


def _json_escape(ch: str) -> str:
    """``ch`` as JSON escapes it (``\\uXXXX``, a pair of them past U+FFFF)."""
    return json.dumps(ch)[1:-1]


SEARCH_VALUE_BYTES = 2048
"""The longest search attribute value Temporal takes by default (its JSON: non-ASCII
characters escaped, six or twelve bytes each)."""


def bounded_preview(text: str, limit: int = 1000, max_json: int = SEARCH_VALUE_BYTES) -> str:
    """``preview(text, limit)``, cut further while its JSON (as Temporal's converter writes
    a search attribute or memo value: non-ASCII escaped) is longer than ``max_json``. A
    preview within that is left exactly as ``preview`` gives it (a workflow's earlier
    values replay unchanged). Pure: workflow code calls it."""
    shown = preview(text, limit)
    if len(json.dumps(shown)) <= max_json:
        return shown
    low, high = 0, len(shown) - 1  # the longest prefix whose "prefix…" fits
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(shown[:middle] + "…")) <= max_json:
            low = middle
        else:
            high = middle - 1
    return shown[:low] + "…"


def wire(text: str) -> str:
    """Text that can cross into workflow history: the JSON payload must be valid UTF-8, so
    lone surrogates a model may send are escaped (the record keeps them exactly)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# These name models defined further down. Until rebuilt, a model is incomplete: each
# TypeAdapter of it generates its schema again (a millisecond for CallModelInput).
SessionCarry.model_rebuild()
StartSessionInput.model_rebuild()
RecordInput.model_rebuild()
CallModelInput.model_rebuild()
CallModelOutput.model_rebuild()
