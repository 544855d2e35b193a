"""`vigil show` tells a sleep's wake-up time as every time a person reads
(``YYYY-MM-DD HH:MM:SS``, UTC): it printed the state's ISO 8601 text."""

from __future__ import annotations

from vigil.workers.cli.render import waiting_for


def test_a_sleeps_time_reads_as_every_time_does() -> None:
    said = "timer until 2026-12-07T03:26:47.909243+00:00"
    assert waiting_for(said) == "timer until 2026-12-07 03:26:47"
    assert waiting_for("timer until 2026-12-07T04:26:47+01:00") == "timer until 2026-12-07 03:26:47"


def test_anything_else_is_shown_as_said() -> None:
    for said in ("a human reply to: which channel?", "timer until later", "approval of a1-0"):
        assert waiting_for(said) == said
