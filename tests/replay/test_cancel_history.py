"""A cancel names who cancelled and why in the session's record (histories/cancel_by.json,
recorded by ``record_histories cancel_by``); a session cancelled under the code before
that (pre_cancel_actor__cancel_by.json) still replays and records what it did then.

Since local bookkeeping the record is a local activity, whose marker holds no input: the
current history shows the ending in the record's summary, and the event itself is read
from the recording made just before (pre_local_bookkeeping__cancel_by.json, the same
workflow code with the record as an activity). tests/integration/test_cli_follow_events.py
reads the same event from the record of a session cancelled today."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from tests.support.history import activity_summaries
from vigil.schema import names

HISTORIES = Path(__file__).resolve().parent / "histories"


def _ended(name: str) -> tuple[dict[str, Any], str]:
    """The recorded session_ended event and the record activity's summary."""
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name != names.ACT_RECORD:
            continue
        arg = json.loads(attrs.input.payloads[0].data)
        for recorded in arg.get("events", []):
            if recorded["kind"] == "session_ended":
                summary = json.loads(event.user_metadata.summary.data)
                return recorded, summary
    raise AssertionError(f"{name}: no session_ended event recorded")


def test_the_cancel_event_names_who_and_why() -> None:
    ended, summary = _ended("pre_local_bookkeeping__cancel_by")
    assert (ended["actor"], ended["reason"]) == ("erin", "enough")
    assert ended["payload"] == {"status": "cancelled", "summary": "cancelled by erin: enough"}
    assert "session_ended by erin" in summary
    history = WorkflowHistory.from_json("cancel_by", (HISTORIES / "cancel_by.json").read_text())
    records = [s for _, kind, s in activity_summaries(history.events) if kind == names.ACT_RECORD]
    assert any("session_ended by erin" in s for s in records), records


def test_a_cancel_under_older_code_recorded_no_one() -> None:
    ended, _ = _ended("pre_cancel_actor__cancel_by")
    assert ended["actor"] is None
    assert ended["payload"]["summary"] == "cancelled by a human"
