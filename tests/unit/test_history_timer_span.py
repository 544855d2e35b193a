"""`vigil history` names a timer by its length: a day's approval wait read ``timer
23:59:59.977971``, a time of day (the timedelta as Python prints it)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from vigil.workers.client_history import timer_span


@pytest.mark.parametrize(
    ("span", "shown"),
    [
        (timedelta(seconds=0.25), "0.25 s"),
        (timedelta(seconds=12.5), "12.5 s"),
        (timedelta(minutes=4, seconds=5), "4 min 5 s"),
        (timedelta(hours=23, minutes=59, seconds=59.4), "23 h 59 min 59 s"),
        (timedelta(seconds=86399.977971), "1 d"),
        (timedelta(days=2, seconds=5), "2 d 5 s"),
    ],
)
def test_a_timer_is_shown_by_its_length(span: timedelta, shown: str) -> None:
    assert timer_span(span) == shown
