"""Reading a session's Temporal history in tests: which activity took how many attempts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle
from temporalio.converter import PayloadConverter

from vigil.workers.client import local_activity_type


@dataclass(frozen=True)
class ActivityRun:
    """One scheduled activity as its history records it (only the last attempt is kept)."""

    name: str
    attempt: int
    """The attempt that started last: 1 means no retry."""
    last_failure: str
    """Why the attempt before it failed ("" on the first attempt)."""


async def activity_runs(
    handle: WorkflowHandle[Any, Any], name: str | None = None
) -> list[ActivityRun]:
    """Started activities of the handle's run, in order; only ``name`` when given."""
    history = await handle.fetch_history()
    scheduled: dict[int, str] = {}
    runs: list[ActivityRun] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            kind = scheduled[started.scheduled_event_id]
            if name is None or kind == name:
                runs.append(ActivityRun(kind, started.attempt, started.last_failure.message))
    return runs


async def local_activities(handle: WorkflowHandle[Any, Any], name: str) -> int:
    """How many local activities of type ``name`` the handle's run holds (a marker each)."""
    history = await handle.fetch_history()
    return sum(local_activity_type(event) == name for event in history.events)


def activity_summaries(events: Iterable[HistoryEvent]) -> list[tuple[int, str, str]]:
    """(event id, activity type, summary) of every activity in a history, in order: the
    scheduled ones and the local ones (a marker each, which holds no input: only its type,
    its result and the summary Temporal UI shows)."""
    found = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kind = event.activity_task_scheduled_event_attributes.activity_type.name
        elif not (kind := local_activity_type(event)):
            continue
        found.append((event.event_id, kind, summary_text(event)))
    return found


def summary_text(event: HistoryEvent) -> str:
    """The summary Temporal UI shows for an event ("" when it has none; plain payloads)."""
    if not event.user_metadata.HasField("summary"):
        return ""
    return str(PayloadConverter.default.from_payload(event.user_metadata.summary, str))
