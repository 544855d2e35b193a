"""What Temporal UI shows of a session: summaries, details and the status an Ack reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vigil.schema.payloads import EventIn, PendingApproval, SessionStatus, ToolCallRef
from vigil.schema.transcript import edited_note, short_json
from vigil.workflows import summaries

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
S = SessionStatus


def _pending() -> PendingApproval:
    return PendingApproval(
        approval_id="a2-0",
        tool="http_fetch",
        arguments_preview='{"url": "https://example.com/"}',
        step=2,
        requested_at=AT - timedelta(hours=1),
        expires_at=AT,
    )


@pytest.mark.parametrize(
    ("action", "before", "after"),
    [
        ("approve", S.WAITING_APPROVAL, S.RUNNING),
        ("reject", S.WAITING_APPROVAL, S.RUNNING),
        ("pause", S.RUNNING, S.PAUSED),
        ("pause", S.WAITING_APPROVAL, S.WAITING_APPROVAL),  # pauses once the wait ends
        ("resume", S.PAUSED, S.RUNNING),
        ("resume", S.SLEEPING, S.SLEEPING),  # paused while asleep: still asleep
        ("message", S.WAITING_HUMAN, S.RUNNING),
        ("message", S.RUNNING, S.RUNNING),
        ("redirect", S.WAITING_HUMAN, S.RUNNING),
        ("wake", S.SLEEPING, S.RUNNING),
    ],
)
def test_status_after_the_action(action: str, before: SessionStatus, after: SessionStatus) -> None:
    assert summaries.status_after(action, before) == after


def test_timer_summaries() -> None:
    assert summaries.approval_timer(_pending()) == (
        'waiting for approval a2-0: http_fetch {"url": "https://example.com/"}, '
        "expires 2026-12-01 09:00:00 UTC"
    )
    assert summaries.sleep_timer(AT) == "sleeping until 2026-12-01 09:00:00 UTC"
    assert summaries.bounded_by("sleeping", AT, None) == "sleeping"
    assert summaries.bounded_by("sleeping", AT, AT - timedelta(minutes=1)) == (
        "sleeping; session deadline 2026-12-01 08:59:00 UTC"
    )
    assert summaries.bounded_by(None, None, None) == "waiting"


def test_tool_call_summary_names_the_arguments_that_run() -> None:
    call = ToolCallRef(
        index=0, call_id="c", name="http_fetch", valid=True, arguments_preview='{"url": "a"}'
    )
    assert summaries.tool_call(3, call, None, None) == 'step 3: http_fetch {"url": "a"}'
    assert summaries.tool_call(3, call, {"url": "b"}, "ana") == (
        'step 3: http_fetch {"url": "b"} (arguments edited by ana)'
    )


def test_long_arguments_are_cut_with_a_mark() -> None:
    arguments = '{"query": "' + "x" * 120 + '"}'
    call = ToolCallRef(index=0, call_id="c", name="search", valid=True, arguments_preview=arguments)
    text = summaries.tool_call(2, call, None, None)
    assert text == f"step 2: search {arguments[: summaries.ARGUMENT_CHARS - 1]}…"
    pending = _pending().model_copy(update={"arguments_preview": arguments})
    assert f"{arguments[: summaries.ARGUMENT_CHARS - 1]}…, expires" in (
        summaries.approval_timer(pending)
    )


def test_record_summary_names_who_acted_once() -> None:
    events = [
        EventIn(key="1", kind="pause", step=1, actor="bob"),
        EventIn(key="2", kind="pause", step=1, actor="bob"),
        EventIn(key="3", kind="model_call", step=1),
        EventIn(key="4", kind="approval_decided", step=1, actor="ana"),
    ]
    assert summaries.record([], events) == (
        "record 0 messages, 4 events: pause by bob; approval_decided by ana"
    )


def test_approval_details_say_how_to_decide() -> None:
    text = summaries.approval_details("s-1", "default", _pending())
    assert "`a2-0`" in text and "`http_fetch`" in text and "example.com" in text
    assert "vigil approve s-1 a2-0 --by YOUR_NAME" in text
    assert (
        "temporal workflow signal --namespace default --workflow-id s-1 --name approve "
        '--input \'{"approval_id": "a2-0", "by": "YOUR_NAME"}\''
    ) in text
    assert "--address" not in text  # a session started without one (older, or raw)


def test_approval_details_name_the_temporal_address_it_was_started_through() -> None:
    text = summaries.approval_details("s-1", "default", _pending(), "127.0.0.1:7346")
    assert (
        '--input \'{"approval_id": "a2-0", "by": "YOUR_NAME"}\' --address 127.0.0.1:7346`'
    ) in text


def test_edited_note_and_short_json() -> None:
    assert edited_note({"url": "b"}, "ana") == '[run with arguments edited by ana: {"url": "b"}]'
    assert edited_note({}, None).startswith("[run with arguments edited by a human: ")
    assert short_json({"k": "x" * 50}, 20) == '{"k": "' + "x" * 12 + "…"
    assert len(short_json({"k": "x" * 50}, 20)) == 20


def test_a_tool_call_summary_says_what_the_model_said_with_it() -> None:
    call = ToolCallRef(
        index=0, call_id="c0", name="http_fetch", valid=True, arguments_preview='{"url": "u"}'
    )
    text = summaries.tool_call(1, call, None, None, "Fetching\n the first   page.")
    assert text == 'step 1: http_fetch {"url": "u"} · model said: "Fetching the first page."'
    long = summaries.tool_call(1, call, None, None, "word " * 200)
    assert len(long) <= summaries.SUMMARY_CHARS and long.endswith('…"')
    assert summaries.tool_call(1, call, None, None, "  ") == 'step 1: http_fetch {"url": "u"}'
