"""Engines, sessionmakers and migrations. Built by the processes, never module globals.

Alembic is imported by the migration functions only: every CLI command that talks to the
database imports this module, and Alembic (with Mako) costs it a noticeable start-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.util import await_only

from vigil.workers.settings import sqlalchemy_url
from vigil.workers.telemetry import instrument_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "schema" / "migrations"


PING_AFTER_IDLE_SECONDS = 0.0
"""A pooled connection idle longer than this is pinged before it is handed out. 0: every
reused one, since a connection used a moment before a database restart is dead too, and
the API's and the CLI's reads are not retried."""
WORKER_PING_AFTER_IDLE_SECONDS = 1.0
"""The worker's engine pings only connections idle this long. Its statements run in
activities, which retry a lost connection (the guard waits out an outage): each connection
used a moment before a database restart fails its next statement once (a lean
transaction's error does not make SQLAlchemy drop the whole pool), and that attempt is
tried again. A ping per transaction was one round trip more in each of a session
step's three or four transactions."""
_IDLE_SINCE = "vigil.idle_since"


POOL_WAIT_SECONDS = 30
"""How long a statement waits for a connection of a full pool before it fails (SQLAlchemy's
``TimeoutError``: the API answers it with a 503)."""


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
    connect_timeout: float | None = None,
) -> AsyncEngine:
    """An engine keeping ``pool_size`` connections open; a burst past them opens up to
    ``max_overflow`` more (``pool_size`` when not given), each closed when given back
    while the pool is full: a new server process and its authentication every time, so
    a server that sees bursts (the API) keeps what it may use and queues past it (0).
    ``connect_timeout``: how long a new connection waits for the server's answer (the
    driver's 60 s when not given: a server that takes the connection and says nothing,
    stopped or its host gone, held a command that long)."""
    engine = create_async_engine(
        sqlalchemy_url(url),
        connect_args={} if connect_timeout is None else {"timeout": connect_timeout},
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=POOL_WAIT_SECONDS,
        pool_recycle=1800,
    )
    # 0 (the default): every reused connection is pinged, like SQLAlchemy's
    # pool_pre_ping, but in one round trip instead of its three.
    ping_when_idle(engine, ping_after_idle)
    instrument_engine(engine)  # a span per statement when tracing is on
    return engine


def ping_when_idle(engine: AsyncEngine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Ping a pooled connection before use only when it sat idle for ``idle_seconds``.

    A ping on every checkout (``pool_pre_ping``) was one more round trip per transaction,
    several per session step. A connection that idled (where a restarted or failed-over
    server leaves dead ones) is still pinged, and a dead one replaced before use. One in
    use moments ago that died since fails its statement: SQLAlchemy then invalidates the
    whole pool and the error is a transient one (``is_transient_db_error``), retried.

    The ping is one ``SELECT 1`` over asyncpg's simple protocol: one round trip, where
    SQLAlchemy's ``pool_pre_ping`` on asyncpg sends three (BEGIN, the ping, ROLLBACK).
    """
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _idle(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or (idle_seconds > 0 and time.monotonic() - since < idle_seconds):
            return  # new, or in use a moment ago
        try:
            driver = getattr(dbapi_connection, "driver_connection", None)
            if driver is not None and hasattr(driver, "execute"):
                await_only(driver.execute("SELECT 1"))
            else:
                dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool closes this connection and hands out another (a fresh one).
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


MIGRATION_LOCK_TIMEOUT_MS = 5_000
"""How long one try of the upgrade waits for a table's lock. A statement that takes a
table's strongest lock (``ALTER TABLE``) waits for the transactions open on the table, and
every later reader and writer of the table queues behind it while it waits: past this it
gives up, the queue goes on, and the upgrade is tried again."""
MIGRATION_GIVE_UP_SECONDS = 600.0
"""How long the upgrade goes on trying for the locks it needs before it gives up."""
_LOCK_NOT_AVAILABLE = "55P03"


class MigrationLocked(RuntimeError):
    """The upgrade never got a lock it needs: a transaction kept it the whole time."""


def _waited_for_a_lock(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is PostgreSQL's ``lock_not_available``."""
    seen: BaseException | None = exc
    while seen is not None:
        for cause in (seen, getattr(seen, "orig", None)):
            if getattr(cause, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                return True
        seen = seen.__cause__
    return False


def migrate_sync(
    url: str,
    *,
    lock_timeout_ms: int = MIGRATION_LOCK_TIMEOUT_MS,
    give_up_after: float = MIGRATION_GIVE_UP_SECONDS,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """``alembic upgrade head``; idempotent. Runs its own event loop (call from a thread).

    Each try waits at most ``lock_timeout_ms`` for a lock (concurrent index builds, which
    hold nobody off, wait as long as they must); a try that timed out is rolled back to its
    last commit (a migration's autocommit block commits what came before it: the revision
    is run again from its top, schema/online_ddl.py) and the upgrade is tried again,
    pausing in between, until ``give_up_after`` seconds have gone: then
    :class:`MigrationLocked`. ``on_wait`` is told of each wait."""
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    cfg = alembic_config(url)
    cfg.attributes["lock_timeout_ms"] = lock_timeout_ms
    deadline = time.monotonic() + give_up_after
    pause = 1.0
    while True:
        try:
            command.upgrade(cfg, "head")
            return
        except DBAPIError as exc:
            if not _waited_for_a_lock(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise MigrationLocked(
                    f"the upgrade waited {give_up_after:g} s for a table's lock that an open "
                    f"transaction holds ({exc.orig}); what it did since its last commit was "
                    "rolled back, and running it again goes on from there. Find the "
                    "transaction in pg_stat_activity (state 'idle in transaction' or a long "
                    "query), end it, and run the upgrade again"
                ) from exc
            if on_wait is not None:
                on_wait(
                    f"a transaction holds a lock the upgrade needs ({exc.orig}): "
                    f"trying again in {min(pause, left):.0f} s"
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, 10.0)


async def migrate(url: str, on_wait: Callable[[str], None] | None = None) -> None:
    await asyncio.to_thread(migrate_sync, url, on_wait=on_wait)


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)
