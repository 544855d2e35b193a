"""Publishing the model's tokens as they are generated (ephemeral, never recorded).

A ``TokenPublisher`` is handed to a streaming provider as its ``on_delta``. Deltas are
gathered and sent every ``FLUSH_SECONDS`` as NOTIFYs on the agent's token channel
(``record.feed.token_channel``), one short transaction per flush, so a fast model costs
the database a few statements a second, not one per token. Each payload names the
session, the message seq being generated and the activity attempt: a retry after a
fault mid-stream starts a new attempt, and followers drop the partial one. The recorded
message (written once the reply is whole) stays the one canonical copy.

Publishing is best effort: an error here is logged and never fails the model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import feed
from vigil.activities.record.lean import engine_of, lean_statements

log = logging.getLogger("vigil.activities.tokens")
FLUSH_SECONDS = 0.05


class TokenPublisher:
    """Collects deltas of one model call and notifies them in small batches."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        *,
        session_id: str,
        agent_id: str,
        seq: int,
        attempt: int,
    ) -> None:
        self._engine = engine_of(sessionmaker)
        self._session_id = session_id
        self._channel = feed.token_channel(agent_id)
        self._seq = seq
        self._attempt = attempt
        self._pending: list[str] = []
        self._index = 0
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self._broken = False

    async def __call__(self, delta: str) -> None:
        """Take one delta (the provider's callback); never blocks on the database."""
        if not delta or self._broken:
            return
        self._pending.append(delta)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        await self._flush()

    async def _flush(self) -> None:
        if not self._pending or self._broken:
            return
        text = "".join(self._pending)
        self._pending.clear()
        payloads = feed.token_payloads(
            self._session_id, self._seq, self._attempt, self._index, text
        )
        self._index += len(payloads)
        self._sending = True
        try:
            # One statement, a transaction of its own: the tokens are told at once.
            async with lean_statements(self._engine) as db:
                await feed.notify_tokens(db, self._channel, payloads)
        except Exception as exc:  # tokens are a courtesy; the record is the truth
            self._broken = True
            log.warning("token stream of %s stopped: %s", self._session_id, exc)
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Send what is left now (before the reply is recorded, so tokens come first).

        A flush still waiting out its batching interval is cancelled and its deltas sent
        here at once: the reply is whole, and waiting on would delay the step by up to
        ``FLUSH_SECONDS``. A flush already sending completes first (order is kept)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            if not self._sending:  # waiting to start or out its interval: not needed now
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()
