"""The kinds of rows in ``events``: every name in one place, in one style.

The style: lower snake case, the subject first, then what happened to it
(``session_paused``, ``approval_decided``, ``input_rejected``); a record of a call names
what was called (``model_call``, ``tool_call``). Stored names are stable: they are what
people's SQL filters on.

Migration ``20261130_10`` renamed the few older names that broke the style; a worker
still running older code may write them for a while, so readers go through
:func:`canonical` (and :func:`stored_as` to filter), and the views through the SQL
function ``vigil_event_kind``, which maps the same :data:`LEGACY` table.
"""

from __future__ import annotations

SESSION_OPENED = "session_opened"
SESSION_ENDED = "session_ended"
SESSION_PAUSED = "session_paused"
SESSION_RESUMED = "session_resumed"
SESSION_REDIRECTED = "session_redirected"
SESSION_WOKEN = "session_woken"
SESSION_RECONCILED = "session_reconciled"
MODEL_CALL = "model_call"
TOOL_CALL = "tool_call"
APPROVAL_REQUESTED = "approval_requested"
APPROVAL_DECIDED = "approval_decided"
APPROVAL_MISMATCH = "approval_mismatch"
HUMAN_MESSAGE = "human_message"
HUMAN_REPLY = "human_reply"
INPUT_REJECTED = "input_rejected"
AGENT_VERSION_CHANGED = "agent_version_changed"
AGENT_VERSION_REFUSED = "agent_version_refused"
CONTEXT_SUMMARY = "context_summary"
CONTEXT_DEGRADED = "context_degraded"
ARTIFACT_REPLACED = "artifact_replaced"
ARTIFACT_UPLOADED = "artifact_uploaded"
INFRASTRUCTURE_RECOVERED = "infrastructure_recovered"
CONVERSATION_IDLE = "conversation_idle"

ALL = (
    SESSION_OPENED,
    SESSION_ENDED,
    SESSION_PAUSED,
    SESSION_RESUMED,
    SESSION_REDIRECTED,
    SESSION_WOKEN,
    SESSION_RECONCILED,
    MODEL_CALL,
    TOOL_CALL,
    APPROVAL_REQUESTED,
    APPROVAL_DECIDED,
    APPROVAL_MISMATCH,
    HUMAN_MESSAGE,
    HUMAN_REPLY,
    INPUT_REJECTED,
    AGENT_VERSION_CHANGED,
    AGENT_VERSION_REFUSED,
    CONTEXT_SUMMARY,
    CONTEXT_DEGRADED,
    ARTIFACT_REPLACED,
    ARTIFACT_UPLOADED,
    INFRASTRUCTURE_RECOVERED,
    CONVERSATION_IDLE,
)

LEGACY: dict[str, str] = {
    "pause": SESSION_PAUSED,
    "resume": SESSION_RESUMED,
    "redirect": SESSION_REDIRECTED,
    "wake": SESSION_WOKEN,
    "rejected_input": INPUT_REJECTED,
    "artifact.replaced": ARTIFACT_REPLACED,
    "artifact.uploaded": ARTIFACT_UPLOADED,
}
"""Old stored name -> its name now (renamed by migration 20261130_10; the API's upload
wrote ``artifact.uploaded`` until migration 20261205_23 named it in the style)."""


def canonical(kind: str) -> str:
    """The kind's name now, for a row written under an old name."""
    return LEGACY.get(kind, kind)


def stored_as(kind: str) -> list[str]:
    """Every name a row of ``kind`` may be stored under (to filter on)."""
    now = canonical(kind)
    return [now, *(old for old, new in LEGACY.items() if new == now)]
