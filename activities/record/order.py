"""When a recorded event's action was done, for readers that put the record in order.

The workflow queues a person's actions (an approval's decision, a message, a pause, a
redirect, a wake, a refused input) and writes them with the session's next record: an
approval's decision lands after the result of the tool call it approved. The row's
``created_at`` is the write time; the time of the action itself is the payload's ``at``
(an ISO timestamp from ``workflow.now()``). ``vigil_action_at(payload, written)`` is the
same rule in SQL (migration 20261201_16).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def action_at(payload: Mapping[str, Any] | None, written: datetime) -> datetime:
    """The payload's ``at`` when it is a timestamp with its offset, else ``written``."""
    value = (payload or {}).get("at")
    if not isinstance(value, str):
        return written
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return written
    return moment if moment.tzinfo is not None else written


def action_at_text(payload: Mapping[str, Any] | None, written: str) -> datetime:
    """``action_at`` of a JSON-ready item (its ``created_at`` as ISO text)."""
    return action_at(payload, datetime.fromisoformat(written))


def item_at(is_event: bool, data: Mapping[str, Any]) -> datetime:
    """When a live-feed item happened: a message's write time, an event's action time."""
    return action_at_text(data.get("payload") if is_event else None, str(data["created_at"]))
