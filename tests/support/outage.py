"""Take a part of the shared test stack away on purpose, and always bring it back.

``PartOutage.stop`` may be called from any thread (e.g. from the LLM stub's responder,
so the outage lands while an activity is in the middle of its work); ``restoring()``
guarantees the part is up again when the test leaves, whatever happened, because the
whole test run shares it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal

from temporalio.client import WorkflowHandle

from vigil.workers.stack import Stack

Part = Literal["postgres", "minio"]


class PartOutage:
    """Stop and start one embedded part of the test stack (idempotent, thread-safe)."""

    def __init__(self, stack: Stack, part: Part) -> None:
        self.stack = stack
        self.part = part
        self.stopped = threading.Event()
        """Set once the part has been stopped (and is down)."""
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            if self.part == "postgres":
                self.stack.postgres.stop()
            else:
                self.stack.minio.stop()
            self.stopped.set()

    def start(self) -> None:
        """Blocking, and runs an event loop of its own: from async code, call it through
        ``asyncio.to_thread``."""
        with self._lock:
            if self.part == "postgres":
                if not self.stack.postgres.ready():
                    self.stack.postgres.start(print)
            elif not (self.stack.minio.running() and self.stack.minio.ready()):
                self.stack.minio.start(print)
                self.stack.minio.wait(print)

    @contextlib.contextmanager
    def restoring(self) -> Iterator[PartOutage]:
        try:
            yield self
        finally:
            self.start()


async def pending_failure(handle: WorkflowHandle[Any, Any], containing: str = "") -> str | None:
    """The last failure of the workflow's pending activity, as ``describe`` (and Temporal
    UI) show it, when it contains ``containing``."""
    desc = await handle.describe()
    for pending in desc.raw_description.pending_activities:
        message = pending.last_failure.message
        if message and containing in message:
            return str(message)
    return None
