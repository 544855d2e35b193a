"""Points in time and timeouts from the numbers of a session's input, whatever they are.

vigil's faces refuse out-of-range numbers before a session starts (schema/limits.py), but
anyone who can start a workflow (a plain Temporal client, the ``temporal`` CLI) can send
any JSON number, ``NaN`` and ``Infinity`` included. A time the workflow computes from one
must never raise: an exception there fails the workflow task on every attempt, and the
session is lost before it is even recorded. So, in workflow code:

- a time ``seconds`` after ``now`` that falls past the year 9999 (the last moment a date
  holds), ``Infinity`` or ``NaN`` is :data:`LATEST`; one before year 1 is ``now``;
- a deadline without a time zone is UTC (what ``Budget.deadline`` documents);
- a heartbeat timeout that is negative or not a number is none at all (what 0 already
  meant), and one too long for a Temporal timeout is the call's own time limit.

Every number that worked before gives the same result as before: only inputs that used to
fail the workflow task get a value here. Pure: workflow code imports it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

LATEST = datetime.max.replace(tzinfo=UTC)
"""The latest moment a session waits for: the end of the year 9999."""


def later(now: datetime, seconds: float) -> datetime:
    """``seconds`` after ``now``: :data:`LATEST` when that is past it or not a number,
    ``now`` when it is before the first date."""
    try:
        return now + timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # past a date's range either way, or NaN
        return now if seconds < 0 else LATEST


def aware(at: datetime) -> datetime:
    """``at`` with a time zone: UTC when it has none."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


MAX_TIMEOUT_SECONDS = 315_576_000_000
"""The longest duration a Temporal timeout holds (protobuf's Duration: 10,000 years)."""


def heartbeat(seconds: float, limit: timedelta) -> timedelta | None:
    """The heartbeat timeout of an activity whose start-to-close limit is ``limit``:
    ``seconds``, or none when that is negative or not a number (Temporal refuses a negative
    one; 0 is none already), or ``limit`` when it is too long for a timeout (Temporal
    caps a heartbeat timeout at start-to-close anyway)."""
    if math.isnan(seconds) or seconds < 0:
        return None
    if seconds > MAX_TIMEOUT_SECONDS:
        return limit
    return timedelta(seconds=seconds)
