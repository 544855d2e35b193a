"""What every built-in tool implementation takes and gives back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from sqlalchemy.ext.asyncio import AsyncSession as DbSession
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from vigil.activities.artifacts.store import ArtifactStore
    from vigil.activities.config import ActivitySettings
    from vigil.activities.memory.store import MemoryStore


class ToolFailed(Exception):
    """A tool ran but could not do its job; the message goes back to the model."""


@dataclass
class BuiltinContext:
    session_id: str
    agent_id: str
    step: int
    settings: ActivitySettings
    store: ArtifactStore
    sessionmaker: async_sessionmaker[DbSession]
    http: httpx.AsyncClient
    memory: MemoryStore | None = None
    call_index: int = 0
    """Which call of the step's model reply this is: with session and step, the call's key."""
    first_attempt: bool = False
    """The activity running the call is on its first attempt: an effect under the call's
    key was most likely not made yet, though it may have been (a local activity run again
    after its workflow task was lost starts at 1 too); a tool makes it once either way."""

    @property
    def call_key(self) -> str:
        """The idempotency key of this tool call: a retry of it carries the same key, so a
        tool can make its effect happen once."""
        return f"{self.session_id}:tool:{self.step}:{self.call_index}"


@dataclass
class ToolOutcome:
    text: str
    data: dict[str, Any] | None = None


ToolFn = Callable[[BuiltinContext, dict[str, Any]], Awaitable[ToolOutcome]]
