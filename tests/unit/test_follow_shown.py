"""`vigil follow` shows what a person cares about, not the record's tuning notes."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.activities.record.feed import FeedItem
from vigil.schema import event_kinds
from vigil.workers.cli.follow import shown


def event(kind: str, **data: Any) -> FeedItem:
    return FeedItem(
        kind="event",
        key=1,
        session_id="s",
        agent_id="a",
        event_kind=kind,
        data={"kind": kind, "step": 1, "payload": {}, **data},
    )


@pytest.mark.parametrize(
    "kind",
    [event_kinds.CONTEXT_DEGRADED, event_kinds.MODEL_CALL, event_kinds.CONTEXT_SUMMARY],
)
def test_follow_leaves_out_bookkeeping(kind: str) -> None:
    # A recall that missed its time budget happens on every step of a busy machine.
    assert not shown(event(kind, payload={"stage": "recall", "budget_ms": 50.0}))


@pytest.mark.parametrize(
    "kind",
    [
        event_kinds.SESSION_PAUSED,
        event_kinds.APPROVAL_DECIDED,
        event_kinds.INPUT_REJECTED,
        event_kinds.INFRASTRUCTURE_RECOVERED,
    ],
)
def test_follow_shows_what_people_and_outages_did(kind: str) -> None:
    assert shown(event(kind, actor="ana"))


def test_an_event_line_sets_step_and_time_apart_from_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from vigil.workers.cli.follow import print_event

    print_event(
        {
            "kind": event_kinds.SESSION_PAUSED,
            "step": 2,
            "actor": "ana",
            "reason": "lunch",
            "payload": {},
            "created_at": "2026-12-01T04:00:45.696202+00:00",
        },
        as_json=False,
    )
    assert capsys.readouterr().out.strip() == "— paused by ana: lunch (step 2, 2026-12-01 04:00:45)"
