"""Who cancelled a session and why, carried in Temporal's cancel reason.

Temporal's cancel has one free-text reason. vigil's client writes it readably,
``"<why> (by <who>)"`` (or ``"(by <who>)"``), so Temporal UI and ``temporal workflow
describe`` show it as it is; the workflow reads the actor and the reason back from it for
the session's cancel event. A reason that does not end in ``(by ...)`` (a cancel sent from
Temporal UI or the plain ``temporal`` CLI) names no one, but for the one Temporal's
scheduler gives the run its overlap policy cancels, which names the schedule. Pure
functions, used by the workflow too.
"""

from __future__ import annotations

import re

_BY = re.compile(r"^(?P<why>.*?)\s*\(by (?P<who>[^()]*)\)\s*$", re.DOTALL)

UNNAMED = "unknown"
"""The actor recorded for a cancel that names no one."""


def reason_text(by: str, reason: str) -> str:
    """Temporal's cancel reason for a cancel by ``by`` because of ``reason``."""
    by, reason = by.strip(), reason.strip()
    if by:
        return f"{reason} (by {by})" if reason else f"(by {by})"
    return reason


SCHEDULE_OVERLAP = "cancelled by schedule overlap policy"
"""The reason Temporal's scheduler gives a run it cancels because a newer run of the
schedule starts (overlap policy ``cancel_other``)."""

SCHEDULE_OVERLAP_WHY = "a newer run of its schedule started (overlap policy cancel_other)"


def parse(text: str | None, schedule_id: str | None = None) -> tuple[str | None, str | None]:
    """(who, why) from a cancel reason; None for a part it does not hold. In a run of a
    schedule (``schedule_id``), the scheduler's own cancel names it (``schedule:<id>``)."""
    if not text or not text.strip():
        return None, None
    if schedule_id and text.strip() == SCHEDULE_OVERLAP:
        return f"schedule:{schedule_id}", SCHEDULE_OVERLAP_WHY
    found = _BY.match(text)
    if found is None or not found["who"].strip():
        return None, text.strip()
    return found["who"].strip(), found["why"].strip() or None


def summary(by: str | None, reason: str | None) -> str:
    """The session's end summary for a cancel."""
    said = f"cancelled by {by or 'a human'}"
    return f"{said}: {reason}" if reason else said
