"""Who cancelled and why survive the trip through Temporal's one free-text cancel reason."""

from __future__ import annotations

import pytest

from vigil.schema import cancel_reason


@pytest.mark.parametrize(
    ("by", "reason"),
    [("erin", "enough"), ("erin", ""), ("", "no longer needed"), ("", ""), ("a b", "x (y) z")],
)
def test_what_the_client_sends_the_workflow_reads_back(by: str, reason: str) -> None:
    assert cancel_reason.parse(cancel_reason.reason_text(by, reason)) == (
        by or None,
        reason or None,
    )


def test_a_plain_reason_names_no_one() -> None:
    # Sent from Temporal UI or `temporal workflow cancel --reason ...`.
    assert cancel_reason.parse("by mistake") == (None, "by mistake")
    assert cancel_reason.parse(None) == (None, None)
    assert cancel_reason.parse("done (by )") == (None, "done (by )")


def test_the_summary_says_who_and_why() -> None:
    assert cancel_reason.summary("erin", "enough") == "cancelled by erin: enough"
    assert cancel_reason.summary(None, None) == "cancelled by a human"


def test_the_schedulers_cancel_names_the_schedule() -> None:
    """Its reason named no one, so a run its schedule's overlap policy cancelled (a newer
    run started) was "cancelled by a human", with the actor ``unknown``."""
    why = "a newer run of its schedule started (overlap policy cancel_other)"
    reason = "cancelled by schedule overlap policy"  # as Temporal's scheduler sends it
    assert cancel_reason.parse(reason, "nightly") == ("schedule:nightly", why)
    # Outside a schedule's run the same words name no one (anyone may send them).
    assert cancel_reason.parse(reason) == (None, reason)
    assert cancel_reason.summary(*cancel_reason.parse(reason, "nightly")) == (
        f"cancelled by schedule:nightly: {why}"
    )
    # A person's words that say the same are theirs.
    said = cancel_reason.reason_text("erin", reason)
    assert cancel_reason.parse(said, "nightly") == ("erin", reason)
