"""A recorded history reads like a transcript in Temporal UI (tests/replay/histories/
transcript_ui.json, recorded by ``record_histories transcript_ui``).

Timers say what the session waits for, the run_tool summary names the arguments that ran
and who edited them, the record summaries name who paused, approved and resumed, the model
activity's result holds the model's words, and an acknowledgement reports the status
after the action.
"""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

from tests.support.history import activity_summaries, summary_text
from vigil.schema import names

HISTORY = Path(__file__).resolve().parent / "histories" / "transcript_ui.json"


def _events() -> list[HistoryEvent]:
    return list(WorkflowHistory.from_json("transcript-ui", HISTORY.read_text()).events)


def _of(kind: int) -> list[HistoryEvent]:
    return [e for e in _events() if e.event_type == kind]


def test_timers_say_what_the_session_waits_for() -> None:
    timers = [summary_text(e) for e in _of(EventType.EVENT_TYPE_TIMER_STARTED)]
    approval = [t for t in timers if t.startswith("waiting for approval a1-0: http_fetch ")]
    assert approval and all("/draft" in t and ", expires 20" in t for t in approval), timers
    assert any(t.startswith("sleeping until 20") for t in timers), timers


def test_activities_name_the_arguments_that_ran_and_who_acted() -> None:
    scheduled = {
        e.event_id: (e.activity_task_scheduled_event_attributes.activity_type.name, summary_text(e))
        for e in _of(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    }
    tools = [s for name, s in scheduled.values() if name == names.ACT_RUN_TOOL]
    assert any(
        s.startswith("step 1: http_fetch ") and "/final" in s and "edited by alice" in s
        for s in tools
    ), tools
    # Records are local activities (a marker each) since local bookkeeping; their summaries
    # are the marker's.
    records = " | ".join(
        s
        for _, name, s in activity_summaries(_events())
        if name in (names.ACT_RECORD, names.ACT_CALL_MODEL)
    )
    # The resume rides with the next model call (a folded step): its summary names it too.
    for action in ("session_paused by bob", "approval_decided by alice", "session_resumed by bob"):
        assert action in records, records

    # The model's reply, in short form, is the model activity's result.
    models = {i for i, (name, _s) in scheduled.items() if name == names.ACT_CALL_MODEL}
    results = [
        json.loads(e.activity_task_completed_event_attributes.result.payloads[0].data)
        for e in _of(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        if e.activity_task_completed_event_attributes.scheduled_event_id in models
    ]
    assert results[0]["content_preview"] == "Fetching first.", results[0]


def test_updates_show_who_sent_them_and_the_status_after() -> None:
    accepted = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request.input
        for e in _of(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    ]
    senders = [(i.name, json.loads(i.args.payloads[0].data)["by"]) for i in accepted]
    assert senders == [(names.UPD_APPROVE, "alice"), (names.UPD_RESUME, "bob")]
    acks = [
        json.loads(
            e.workflow_execution_update_completed_event_attributes.outcome.success.payloads[0].data
        )
        for e in _of(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)
    ]
    assert [(a["message"], a["status"], a["paused"]) for a in acks] == [
        ("approved a1-0", "running", True),
        ("resumed", "running", False),
    ]
