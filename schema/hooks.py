"""The shapes of inbound triggers and outbound webhooks that cross the workflow boundary.

Pure data like ``schema.payloads``: no SQLAlchemy, no I/O, so workflow code may import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WebhookEvent = Literal["approval_requested", "human_asked", "session_ended"]
WEBHOOK_EVENTS: tuple[str, ...] = ("approval_requested", "human_asked", "session_ended")

TriggerAction = Literal["start", "message", "wake"]
TRIGGER_ACTIONS: tuple[str, ...] = ("start", "message", "wake")


class NotifyInput(BaseModel):
    """One event of a session to deliver to the webhooks of its agent (the input of the
    notify workflow and of the delivery activity). The URLs and secrets are never in it:
    the activity reads them from the configuration, so only configured URLs are called."""

    model_config = ConfigDict(extra="ignore")

    delivery_id: str
    """Stable for the event (session id and event key): the receiver's idempotency key."""
    session_id: str
    agent_id: str
    agent_version: int | None = None
    """The session's pinned version, whose agent file names webhooks too."""
    event: WebhookEvent
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
    """Small, bounded facts of the event (approval id and tool, the question, the status)."""


class NotifyOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    delivered: int = 0
    rejected: int = 0
    """Webhooks that refused the delivery for good (a 4xx other than 408/429)."""
