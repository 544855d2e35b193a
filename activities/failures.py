"""What went wrong, in a few words: the classification of an activity's exception.

Our own infrastructure being away (PostgreSQL, the object store) is told apart from
everything else, because it must never end a session nor count against a tool's or a
provider's failure budget (see ``activities.guard``). Every message is one short line:
Temporal shows it in its UI and ``describe``, and replaces a failure over its size limit
(long tracebacks, chained driver errors) by "Failure exceeds size limit.".
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import asyncpg
import urllib3.exceptions
from minio.error import S3Error, ServerError
from sqlalchemy.exc import DBAPIError, StatementError

from vigil.activities.record.retry import is_transient_db_error

POSTGRES = "PostgreSQL"
OBJECT_STORE = "object store"
CONFIGURED_WORKER = "a worker set up for this call"
MAX_MESSAGE = 240

# Where an exception was raised decides which part it speaks of: a refused connection
# is an OSError wherever it comes from.
_PARTS = (
    (POSTGRES, ("asyncpg", "sqlalchemy", "vigil.activities.record")),
    (OBJECT_STORE, ("minio", "urllib3", "vigil.activities.artifacts.s3")),
    (OBJECT_STORE, ("vigil.activities.artifacts.store",)),
)
# S3 error codes that mean "the service, not the request": try again later.
_S3_UNAVAILABLE = {
    "ServiceUnavailable",
    "SlowDown",
    "InternalError",
    "XMinioServerNotInitialized",
    "XMinioStorageFull",
    "RequestTimeout",
}
# The filesystem store is unavailable, not wrong, when its disk is full or failing.
_DISK_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT}
_ADDRESS = re.compile(r"\('([0-9a-fA-F.:]+)', (\d+)")


@dataclass(frozen=True)
class Outage:
    """Our infrastructure was away: which part, and what the attempt met."""

    part: str
    detail: str

    @property
    def message(self) -> str:
        if self.part == CONFIGURED_WORKER:
            return f"waiting for {self.part}: {self.detail}"
        return f"{self.part} unavailable: {self.detail}"


class WorkerNotReady(Exception):
    """This worker cannot serve the call as it is set up (a model connection it has no
    entry for, a credential it cannot have): a worker that can, or this one once its
    setup is fixed, will. Waited out as an outage, so a deployment's mistake never ends
    a session."""


def short(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    """``Type: message`` of the exception, short. A database error is told by its driver's
    message: SQLAlchemy's own text carries the statement and its parameters."""
    if isinstance(exc, StatementError) and exc.orig is not None:
        exc = exc.orig
        # SQLAlchemy's asyncpg adapter wraps the driver's exception once more.
        if isinstance(exc.__cause__, asyncpg.exceptions.PostgresError):
            exc = exc.__cause__
    text = str(exc)
    name = type(exc).__name__
    return short(f"{name}: {text}" if text else name)


def outage_of(exc: BaseException) -> Outage | None:
    """The outage ``exc`` reports, or None when it is anything else (a bug, a bad request,
    a tool's or a provider's own failure)."""
    if isinstance(exc, WorkerNotReady):
        return Outage(CONFIGURED_WORKER, short(str(exc)))
    part = _part_of(exc)
    if part == POSTGRES and is_transient_db_error(exc):
        return Outage(POSTGRES, _db_detail(exc))
    if part == OBJECT_STORE and _is_store_outage(exc):
        return Outage(OBJECT_STORE, _store_detail(exc))
    return None


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it (SQLAlchemy's ``orig`` included), once each."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__


def errno_of(exc: BaseException) -> int | None:
    """The errno of the first OS error in ``exc``'s chain (a refused connection's), if any."""
    return next(
        (link.errno for link in causes(exc) if isinstance(link, OSError) and link.errno), None
    )


def _frames_inner_first(tb: TracebackType | None) -> list[str]:
    modules: list[str] = []
    while tb is not None:
        modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return modules[::-1]


def _part_of(exc: BaseException) -> str | None:
    for link in causes(exc):
        for module in [type(link).__module__, *_frames_inner_first(link.__traceback__)]:
            for part, prefixes in _PARTS:
                if module.startswith(prefixes):
                    return part
    return None


def _is_store_outage(exc: BaseException) -> bool:
    for link in causes(exc):
        if isinstance(link, S3Error):
            return link.code in _S3_UNAVAILABLE
        if isinstance(link, ServerError):
            return True
        if isinstance(
            link,
            urllib3.exceptions.MaxRetryError
            | urllib3.exceptions.NewConnectionError
            | urllib3.exceptions.ProtocolError
            | urllib3.exceptions.TimeoutError,
        ):
            return True
        if isinstance(link, OSError) and (
            link.errno in _DISK_ERRNOS or isinstance(link, ConnectionError | TimeoutError)
        ):
            return True
    return False


def address_of(exc: BaseException) -> tuple[str, int] | None:
    """The (host, port) a failed connection names: in its message, or its pool's."""
    for link in causes(exc):
        found = _ADDRESS.search(str(link))
        if found:
            return found.group(1), int(found.group(2))
        pool = getattr(link, "pool", None)
        host, port = getattr(pool, "host", None), getattr(pool, "port", None)
        if host and port:
            return str(host), int(port)
    return None


def _address(exc: BaseException) -> str:
    at = address_of(exc)
    return f" ({at[0]}:{at[1]})" if at else ""


def _refused(exc: BaseException) -> bool:
    for link in causes(exc):
        if isinstance(link, ConnectionRefusedError):
            return True
        text = str(link)
        if "Connect call failed" in text or "Connection refused" in text:
            return True
    return False


def _db_detail(exc: BaseException) -> str:
    if _refused(exc):
        return f"connection refused{_address(exc)}"
    for link in causes(exc):
        if isinstance(link, asyncpg.exceptions.ConnectionDoesNotExistError | ConnectionResetError):
            return "connection lost"
        if isinstance(link, asyncpg.exceptions.PostgresError):
            return short(f"{link.sqlstate}: {link}", 160)
        if isinstance(link, TimeoutError):
            return "timed out"
    innermost = list(causes(exc))[-1]
    return short(describe(innermost), 160)


def _store_detail(exc: BaseException) -> str:
    if _refused(exc):
        return f"connection refused{_address(exc)}"
    for link in causes(exc):
        if isinstance(link, S3Error):
            return short(f"{link.code}: {link.message}", 160)
        if isinstance(link, ServerError):
            return f"HTTP {link.status_code}"
        if isinstance(link, OSError) and link.errno in _DISK_ERRNOS:
            return short(f"{errno.errorcode.get(link.errno or 0, 'OSError')}: {link.strerror}", 160)
    innermost = list(causes(exc))[-1]
    return short(describe(innermost), 160)
