"""How the record and Temporal UI tell a tool call a human edited (shared by the workflow,
which writes summaries, and the activity, which writes the transcript). Pure functions."""

from __future__ import annotations

import json
from typing import Any


def short_json(value: Any, limit: int = 200) -> str:
    """Compact JSON of ``value`` cut to ``limit`` characters (for one-line summaries)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def edited_note(arguments: Any, by: str | None, limit: int = 2000) -> str:
    """The first line of the result of a call run with edited arguments."""
    who = by or "a human"
    return f"[run with arguments edited by {who}: {short_json(arguments, limit)}]"
