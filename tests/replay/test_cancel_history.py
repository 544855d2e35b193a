"""A cancel names who cancelled and why in the session's record (histories/cancel_by.json,
recorded by ``record_histories cancel_by``); a session cancelled under the code before
that (pre_cancel_actor__cancel_by.json) still replays and records what it did then."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

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
    ended, summary = _ended("cancel_by")
    assert (ended["actor"], ended["reason"]) == ("erin", "enough")
    assert ended["payload"] == {"status": "cancelled", "summary": "cancelled by erin: enough"}
    assert "session_ended by erin" in summary


def test_a_cancel_under_older_code_recorded_no_one() -> None:
    ended, _ = _ended("pre_cancel_actor__cancel_by")
    assert ended["actor"] is None
    assert ended["payload"]["summary"] == "cancelled by a human"
