"""Payloads of the retention workflow (durable contracts: only add optional fields).

No SQLAlchemy, no I/O: workflow code imports this module through the sandbox.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vigil.schema.payloads import Payload


class RetentionRunInput(Payload):
    """One run of the retention schedule."""

    batch_size: int = 50
    """Sessions planned per batch."""
    max_batches: int = 20
    """Batches per run; what is left is due again at the next run."""


class RetentionPlanInput(Payload):
    limit: int = 50
    skip: list[str] = Field(default_factory=list)
    """Sessions that already failed in this run: not planned again until the next."""


class RetentionDue(Payload):
    session_id: str
    agent_id: str
    action: Literal["archive", "erase"]


class RetentionPlan(Payload):
    due: list[RetentionDue] = Field(default_factory=list)


class RetentionItemOutput(Payload):
    session_id: str
    action: Literal["archive", "erase"]
    detail: str = ""


class RetentionRunResult(Payload):
    archived: int = 0
    erased: int = 0
    failed: list[str] = Field(default_factory=list)
    """Session ids whose archival or erasure failed (each is retried at the next run)."""
