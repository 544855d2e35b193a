"""Payloads of the tool queue probe: who polls a tool worker's task queue.

Pure data like ``schema.payloads`` (workflow code imports it).
"""

from __future__ import annotations

from vigil.schema.payloads import Payload


class ProbeToolQueueInput(Payload):
    task_queue: str


class ProbeToolQueueOutput(Payload):
    task_queue: str
    pollers: int
    """Workers that polled the queue for activities recently."""
    identities: list[str] = []
