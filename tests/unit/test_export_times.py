"""The Markdown export writes every time in one format, the header's included."""

from __future__ import annotations

import re

from vigil.activities.record.reads import _markdown_header

ONE_FORMAT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+00:00$")


def test_started_and_finished_read_like_the_message_times() -> None:
    header = {
        "id": "s-1",
        "agent_id": "ops",
        "goal": "g",
        "status": "completed",
        "step": 3,
        "created_at": "2026-12-01T04:00:13.566458+00:00",  # as to_jsonb gives it
        "finished_at": "2026-12-01T04:01:27.946361+00:00",
        "tokens_in": 1,
        "tokens_out": 2,
        "cost_usd": 0.0,
    }
    lines = dict(
        line[len("- **") :].split(":** ", 1)
        for line in _markdown_header(header).splitlines()
        if line.startswith("- **")
    )
    assert lines["Started"] == "2026-12-01 04:00:13.566+00:00"
    assert ONE_FORMAT.match(lines["Finished"]), lines
    running = _markdown_header({**header, "finished_at": None})
    assert "- **Finished:** -" in running
