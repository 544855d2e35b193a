"""Round trips to PostgreSQL, counted at the driver: every message asyncpg sends and waits
for, whatever layer sent it (SQLAlchemy's sessions, lean transactions, pings).

Each call of these methods of an asyncpg connection or prepared statement is one round
trip; ``prepare`` counts only when it really prepares (SQLAlchemy and asyncpg keep
prepared statements). A transaction is counted at its ``BEGIN``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement

_CONNECTION = ("execute", "fetch", "fetchrow", "fetchval", "executemany", "prepare")
_PREPARED = ("fetch", "fetchrow", "fetchval", "executemany")


class Counted:
    round_trips = 0
    transactions = 0


@contextmanager
def counting() -> Iterator[Counted]:
    """Count round trips and transactions while the block runs (in this process)."""
    counted = Counted()

    def wrap(patched: pytest.MonkeyPatch, cls: type, name: str) -> None:
        original = getattr(cls, name)

        async def sending(self: Any, *args: Any, **kwargs: Any) -> Any:
            counted.round_trips += 1
            query = args[0] if args and isinstance(args[0], str) else ""
            if query.lstrip().upper().startswith("BEGIN"):
                counted.transactions += 1
            return await original(self, *args, **kwargs)

        patched.setattr(cls, name, sending)

    with pytest.MonkeyPatch.context() as patched:
        for name in _CONNECTION:
            wrap(patched, asyncpg.Connection, name)
        for name in _PREPARED:
            wrap(patched, PreparedStatement, name)
        yield counted
