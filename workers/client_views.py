"""What the client hands back about sessions: the started session, a listing's rows and
pages, a session's view, and Temporal's statuses in the record's words.

Part of VigilClient (workers/client.py), which re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecutionStatus

from vigil.schema.payloads import SessionState, SessionStatus

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start.
    from vigil.activities.record import store as record
    from vigil.activities.record.archived import ArchivedTranscript


@dataclass(frozen=True)
class StartedSession:
    id: str
    ui_url: str | None


@dataclass(frozen=True)
class SessionSummary:
    id: str
    agent_id: str
    goal: str
    status: str
    step: int
    created_at: datetime
    updated_at: datetime
    schedule_id: str | None
    temporal_status: str | None
    recorded: bool = True
    """False for a session Temporal knows whose record row is not written yet (its status
    then reads ``unrecorded``): usually no worker has picked it up."""


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionSummary]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; None when this page is the last."""


@dataclass(frozen=True)
class SessionView:
    session: record.SessionRow
    state: SessionState | None
    """The live state; None when the session has ended or no worker answered in time."""
    messages: list[record.StoredMessage]
    ui: str | None
    state_unavailable: str | None = None
    """Why there is no live state for a running session (no worker, Temporal down)."""
    archived: ArchivedTranscript | None = None
    """Where the transcript went when it was archived and pruned (``messages`` is empty)."""
    retrying: list[str] = field(default_factory=list)
    """The calls Temporal is trying again for a running session, each with its attempt and
    what the last one met (a part away, a worker that cannot serve it): why it waits."""


STATUSES = frozenset(s.value for s in SessionStatus)
RUNNING_STATUSES = (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)
"""Temporal's statuses of a session that still runs."""


@dataclass(frozen=True)
class RetriedCall:
    """A call of a session that failed and waits for another attempt."""

    activity: str
    attempt: int
    failure: str
    """What the last attempt met (why the session does not move)."""

    def __str__(self) -> str:
        return f"{self.activity} attempt {self.attempt}: {self.failure}"


def retried_calls(desc: Any) -> list[RetriedCall]:
    """The calls of a described session that failed and wait for another attempt."""
    return [
        RetriedCall(p.activity_type.name, p.attempt, p.last_failure.message)
        for p in desc.raw_description.pending_activities
        if p.attempt > 1 and p.last_failure.message
    ]


def said_status(status: WorkflowExecutionStatus) -> str:
    """Temporal's status of a closed session in the record's words (`cancelled`)."""
    word = status.name.lower()
    return SessionStatus.CANCELLED.value if word == "canceled" else word


UNRECORDED = "unrecorded"
"""The status `list` shows for a session Temporal runs that has no record row yet."""
STATE_QUERY_SECONDS = 10.0
