"""VigilClient: the async API over the Temporal client and the PostgreSQL record.

Everything the CLI does goes through here, so scripts get the same behaviour.

The class is built in layers, each a module of its own: client_core.py (settings, the
Temporal client, the record's engine, workers, Temporal's failures as VigilErrors),
client_start.py (starting sessions), client_reads.py (a session's state and view, pages of
sessions and approvals), client_history.py (messages, events, Temporal's history),
client_controls.py (approve, pause, redirect, cancel, ...), client_schedules.py
(schedules) and client_record.py (export, search, memory, artifacts). The errors are in
client_errors.py and the views in client_views.py; every name other modules import from
this one is re-exported here.
"""

from __future__ import annotations

from vigil.schema.tools import MEMORY_KINDS
from vigil.workers.client_controls import refuse_oversized
from vigil.workers.client_core import CLIENT_DB_POOL_SIZE, _VigilClientCore
from vigil.workers.client_errors import (
    BadArgument,
    Forbidden,
    NotFound,
    NotRecordedYet,
    NotTakenYet,
    NoWorker,
    PayloadKeysMissing,
    Refused,
    SessionIdTaken,
    TemporalRefused,
    UnknownAgent,
    UnknownArtifact,
    UnknownSchedule,
    UnknownSession,
    Unreachable,
    VigilError,
)
from vigil.workers.client_history import (
    LOCAL_ACTIVITY_MARKER,
    HistoryLine,
    local_activity_data,
    local_activity_type,
)
from vigil.workers.client_reads import MAX_RECENT_MESSAGES
from vigil.workers.client_record import MAX_MEMORY_ID, MAX_RECALL, _RecordExtras
from vigil.workers.client_schedules import (
    CRON_MEMO,
    OVERLAP,
    ScheduleControls,
    next_runs,
    running_sessions,
)
from vigil.workers.client_start import first_attributes
from vigil.workers.client_views import (
    RUNNING_STATUSES,
    STATE_QUERY_SECONDS,
    STATUSES,
    UNRECORDED,
    RetriedCall,
    SessionPage,
    SessionSummary,
    SessionView,
    StartedSession,
    retried_calls,
    said_status,
)
from vigil.workers.settings import Settings

__all__ = [
    "CRON_MEMO",
    "LOCAL_ACTIVITY_MARKER",
    "MAX_MEMORY_ID",
    "MAX_RECALL",
    "MAX_RECENT_MESSAGES",
    "MEMORY_KINDS",
    "OVERLAP",
    "RUNNING_STATUSES",
    "STATE_QUERY_SECONDS",
    "STATUSES",
    "UNRECORDED",
    "BadArgument",
    "Forbidden",
    "HistoryLine",
    "NoWorker",
    "NotFound",
    "NotRecordedYet",
    "NotTakenYet",
    "PayloadKeysMissing",
    "Refused",
    "RetriedCall",
    "SessionIdTaken",
    "SessionPage",
    "SessionSummary",
    "SessionView",
    "StartedSession",
    "TemporalRefused",
    "UnknownAgent",
    "UnknownArtifact",
    "UnknownSchedule",
    "UnknownSession",
    "Unreachable",
    "VigilClient",
    "VigilError",
    "first_attributes",
    "local_activity_data",
    "local_activity_type",
    "next_runs",
    "refuse_oversized",
    "retried_calls",
    "running_sessions",
    "said_status",
]


class VigilClient(_RecordExtras, ScheduleControls):
    """The async API over the Temporal client and the record (see module docstring)."""

    @classmethod
    async def connect(
        cls, settings: Settings, *, db_pool_size: int = CLIENT_DB_POOL_SIZE
    ) -> VigilClient:
        core = await _VigilClientCore.connect(settings)
        return cls(core.settings, core.temporal, db_pool_size=db_pool_size)
