"""Retry a unit of database work across lost connections and server restarts.

In production Temporal retries a failed activity; this wrapper is for places that must
ride out a short outage in-process (and for tests that prove the writes are idempotent:
a retried append whose first attempt did commit leaves no duplicate, because every
write is keyed). Only connection-level failures are retried; a constraint violation or
a bad query fails at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError as SAOperationalError

T = TypeVar("T")

# SQLSTATE classes and codes that mean "the connection, not the statement, failed":
# 08xxx connection exceptions, 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
# connect now (starting up or shutting down), 53300 too many connections (a server full
# while every client reconnects after an outage).
_TRANSIENT_SQLSTATE_PREFIXES = ("08",)
_TRANSIENT_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    SAOperationalError,
    SAInterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    ConnectionError,  # refused / reset while the server is down
    TimeoutError,
)
_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def is_transient_db_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a lost or refused database connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
        ):
            return True
        if isinstance(current, OSError) and not isinstance(current, _FILE_ERRORS):
            # Sockets: refused, unreachable, broken pipe; asyncio reports a refused
            # connect to several addresses as a bare OSError.
            return True
        if isinstance(current, DBAPIError) and current.orig is not None:
            current = current.orig
            continue
        current = current.__cause__ or current.__context__
    return False


async def with_db_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run ``fn`` (one whole transaction) until it succeeds or ``attempts`` are used up.

    ``fn`` must be idempotent: it may have committed before its connection broke. The
    delay doubles from ``base_delay`` up to ``max_delay``, with jitter so that many
    writers do not reconnect in lockstep. ``on_retry(attempt, error)`` is told of each
    retried failure.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except Exception as exc:
            if attempt == attempts or not is_transient_db_error(exc):
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")
