"""Lean transactions: the session step's statements straight on the pooled driver connection.

A session step runs three or four short transactions of a few statements each. Through
SQLAlchemy's ORM session each of them cost, on this machine, about 1.3 ms of this
process's CPU before its first statement (session, checkout, ``BEGIN``, ``COMMIT``,
check-in) and about 0.4 ms per statement (compilation lookup, cursor adaptation through
greenlets, result set-up): a third of a low-latency step's CPU went to that layer. A lean
transaction takes a connection from the same pool (so the same limits, ping and
disposal), runs ``BEGIN``, the statements and ``COMMIT`` on the asyncpg connection under
it, and hands rows back as SQLAlchemy ``Result`` objects, so the record's functions take
either.

What it keeps from SQLAlchemy: the statements are the same ``TextClause`` objects,
compiled once per statement for the engine's dialect (bind types and their processors
included), and the connection's type codecs are the ones SQLAlchemy set up, so rows read
either way are equal. What differs: errors are asyncpg's own (``failures`` and
``retry`` know them: an outage is still an outage), and a connection that broke is
invalidated here, not by SQLAlchemy. Expanding ("IN") parameters are not supported.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import TextClause, event
from sqlalchemy.engine import Dialect, Engine, Result
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.util import greenlet_spawn

StatementSpan = Callable[[str], AbstractContextManager[Any]]
"""Opens a span around one statement, given its SQL (``workers.tracing`` sets it when
tracing is on): lean statements bypass SQLAlchemy's cursor events, which trace the rest."""


class _Tracing:
    statement_span: StatementSpan | None = None


def trace_statements(span: StatementSpan | None) -> None:
    """Trace every lean statement with ``span`` (None: stop)."""
    _Tracing.statement_span = span


class Statements(Protocol):
    """What the record's hot-path functions need of a transaction: AsyncSession has it,
    and so has ``LeanTransaction``."""

    async def execute(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> Result[Any]: ...


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Any, ...]
    fixed: Mapping[str, Any]


class LeanTransaction:
    """Statements in one open transaction on an asyncpg connection (see the module)."""

    def __init__(self, driver: Any, dialect: Dialect) -> None:
        self._driver = driver
        self._dialect = dialect

    def _compiled(self, statement: TextClause) -> _Compiled:
        # Kept on the statement object (the hot-path statements are built once:
        # record.sql), with the object's id: ``bindparams()`` copies a statement's
        # attributes, and a typed copy must not use its original's compiled form.
        kept: tuple[int, dict[Dialect, _Compiled]] | None = statement.__dict__.get("_vigil_lean")
        if kept is None or kept[0] != id(statement):
            kept = (id(statement), {})
            statement.__dict__["_vigil_lean"] = kept
        cache = kept[1]
        found = cache.get(self._dialect)
        if found is None:
            compiled = statement.compile(dialect=self._dialect)
            names = tuple(compiled.positiontup or ())
            binds = [compiled.binds[name] for name in names]
            found = _Compiled(
                sql=compiled.string,
                names=names,
                processors=tuple(
                    b.type.dialect_impl(self._dialect).bind_processor(self._dialect) for b in binds
                ),
                fixed={b.key: b.value for b in binds if b.value is not None},
            )
            cache[self._dialect] = found
        return found

    async def execute(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        rows = await self._fetch(statement, params)
        keys = list(rows[0].keys()) if rows else []
        return IteratorResult(SimpleResultMetaData(keys), iter([tuple(r) for r in rows]))

    async def _fetch(self, statement: TextClause, params: Mapping[str, Any] | None) -> list[Any]:
        compiled = self._compiled(statement)
        given = {**compiled.fixed, **(params or {})} if compiled.fixed else (params or {})
        args = [
            given[name] if process is None else process(given[name])
            for name, process in zip(compiled.names, compiled.processors, strict=True)
        ]
        span = _Tracing.statement_span
        if span is None:
            rows: list[Any] = await self._driver.fetch(compiled.sql, *args)
            return rows
        with span(compiled.sql):
            rows = await self._driver.fetch(compiled.sql, *args)
            return rows


async def one_row(
    db: Statements, statement: TextClause, params: Mapping[str, Any] | None = None
) -> Mapping[Any, Any]:
    """The one row ``statement`` returns (an error when it returns none or more), by column
    name. On a lean transaction it is the driver's own row: building a ``Result`` around a
    single row cost each of a step's two statements about 0.03 ms of CPU (bench/RESULTS.md,
    2026-12-06 morning)."""
    if not isinstance(db, LeanTransaction):
        return (await db.execute(statement, params)).mappings().one()
    rows = await db._fetch(statement, params)
    if len(rows) != 1:
        raise (NoResultFound if not rows else MultipleResultsFound)(
            f"one row expected, {len(rows)} returned"
        )
    row: Mapping[Any, Any] = rows[0]
    return row


def literal(value: str) -> str:
    """``value`` as an SQL string literal (``E'...'``: the same whatever
    ``standard_conforming_strings`` says), for the few settings sent with ``BEGIN``."""
    if "\x00" in value:
        raise ValueError("a NUL character cannot be sent to PostgreSQL")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def xact_lock(key: str, *, shared: bool = False) -> str:
    """A transaction-level advisory lock on ``key``'s hash, as an expression for a
    ``SELECT`` (the key a literal: it may ride with ``BEGIN``); ``shared`` for the
    lock's shared mode. Usable in SQLAlchemy's ``text()`` and as plain SQL alike."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    # ``\:``: read as ``:`` by SQLAlchemy's ``text()`` (where ``:name`` is a parameter)
    # and by PostgreSQL in an ``E''`` literal alike, so either way the key is the same.
    return f"{fn}(hashtextextended({literal(key).replace(':', chr(92) + ':')}, 0))"


def memory_lock(agent_id: str, kind: str) -> str:
    """The key of the lock every change of ``agent_id``'s memories of ``kind`` holds for
    its transaction (a write, a forget, a session's erasure), so that none of them reads
    the memories while another changes them."""
    return json.dumps(["vigil.memory", agent_id, kind])


def set_configs(settings: Mapping[str, str], *, local: bool) -> str:
    """``settings`` as ``set_config`` calls for one ``SELECT`` (names and values as
    literals): for the transaction only (``local``) or for the session."""
    scope = "true" if local else "false"
    return ", ".join(
        f"set_config({literal(name)}, {literal(value)}, {scope})"
        for name, value in settings.items()
    )


@asynccontextmanager
async def lean_transaction(
    engine: AsyncEngine, *, then: str | None = None
) -> AsyncIterator[LeanTransaction]:
    """A transaction on a connection from ``engine``'s pool: committed on a clean exit,
    rolled back on an error; the connection goes back to the pool either way (or is
    discarded when it broke). ``then``: plain SQL (no parameters) sent in the same round
    trip as ``BEGIN``."""
    pooled = await engine.raw_connection()
    driver = pooled.driver_connection
    assert driver is not None
    clean = False
    try:
        await driver.execute(f"BEGIN; {then}" if then else "BEGIN")
        yield LeanTransaction(driver, engine.dialect)
        await driver.execute("COMMIT")
        clean = True
    except BaseException:
        # Rolled back, and given back only if that worked and nothing is left open. A
        # cancellation can land mid-statement and again in this very clean-up; a
        # connection handed back inside the transaction would give its next user the
        # agent's role, or an aborted transaction on every use.
        if not driver.is_closed():
            try:
                await driver.execute("ROLLBACK")
                clean = not driver.is_in_transaction()
            except Exception:
                clean = False  # the connection broke: the block's own error is told
            except BaseException:
                clean = False
                raise  # a cancellation during the clean-up is the caller's to see
        raise
    finally:
        await _give_back(pooled, clean)


_BOUND_POOL = "_vigil_bound_pool"
"""Where an engine keeps its pool of bound connections (``lean_bound``), made on first
use: on the engine itself, so the two are freed together."""

_BOUND: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
"""The session settings each bound driver connection holds, by connection: a connection
replaced (recycled, invalidated, reconnected) is a new key, bound afresh."""


def _bound_pool(engine: AsyncEngine) -> Pool:
    sync = engine.sync_engine
    pool: Pool | None = sync.__dict__.get(_BOUND_POOL)
    if pool is None:
        # The engine's pool configuration and listeners (the dialect's codecs, the idle
        # ping), but its own connections, none of them ever handed to other code, and
        # the most recently used handed out first: it is the likeliest to hold the
        # settings asked for.
        own = sync.pool
        if isinstance(own, QueuePool):
            pool = type(own)(
                # What Pool.recreate() passes on, but handing out the newest first.
                own._creator,
                pool_size=own.size(),
                max_overflow=own._max_overflow,
                timeout=own.timeout(),
                recycle=own._recycle,
                pre_ping=own._pre_ping,
                reset_on_return=own._reset_on_return,
                use_lifo=True,
                _dispatch=own.dispatch,
                dialect=own._dialect,
            )
        else:
            pool = own.recreate()
        sync.__dict__[_BOUND_POOL] = pool
        kept = weakref.ref(pool)

        def _dispose(_engine: Engine) -> None:
            found = kept()
            if found is not None:
                found.dispose()

        event.listen(sync, "engine_disposed", _dispose)
    return pool


def _binding(held: Mapping[str, str], wanted: Mapping[str, str]) -> str | None:
    """The message that makes a connection holding ``held`` hold ``wanted`` too (None: it
    does already)."""
    changed = {name: value for name, value in wanted.items() if held.get(name) != value}
    return f"SELECT {set_configs(changed, local=False)}" if changed else None


@asynccontextmanager
async def lean_bound(
    engine: AsyncEngine, settings: Mapping[str, str]
) -> AsyncIterator[LeanTransaction]:
    """Statements on a connection whose session holds ``settings``, each statement a
    transaction of its own: one round trip a statement, where ``lean_transaction`` adds
    ``BEGIN`` and ``COMMIT``. For work that is one statement, or statements that need not
    see each other atomically.

    The connection comes from a pool of the engine's own (as large as the engine's) that
    no other code uses, and keeps its settings between uses: those that differ from what
    it holds are sent (``set_config``, one round trip) before the block runs. A setting
    not named keeps whatever an earlier use set, so a caller names every setting its
    statements depend on. Its statements must not change the settings themselves. An
    error or cancellation inside the block discards the connection."""
    async with _each_its_own(engine, _bound_pool(engine), settings) as statements:
        yield statements


@asynccontextmanager
async def lean_statements(engine: AsyncEngine) -> AsyncIterator[LeanTransaction]:
    """Statements on a connection of ``engine``'s own pool, each a transaction of its own
    (one round trip), as the connection's login role: for system work of one statement
    that must leave nothing on the connection (a notification). An error or cancellation
    inside the block discards the connection."""
    async with _each_its_own(engine, engine.sync_engine.pool, None) as statements:
        yield statements


@asynccontextmanager
async def _each_its_own(
    engine: AsyncEngine, pool: Pool, settings: Mapping[str, str] | None
) -> AsyncIterator[LeanTransaction]:
    pooled = await greenlet_spawn(pool.connect)
    driver = pooled.driver_connection
    assert driver is not None
    clean = False
    try:
        if settings is not None:
            held = _BOUND.pop(driver, {})
            binding = _binding(held, settings)
            if binding is not None:
                await driver.execute(binding)
            _BOUND[driver] = {**held, **settings}
        yield LeanTransaction(driver, engine.dialect)
        clean = not driver.is_closed() and not driver.is_in_transaction()
    finally:
        await _give_back(pooled, clean)


async def _give_back(pooled: PoolProxiedConnection, clean: bool) -> None:
    """Return a connection to its pool; one not ``clean`` is closed at once, whatever it is
    doing, and replaced (a bound one's settings go with it: they are kept by connection)."""
    if not clean:
        driver = pooled.driver_connection
        assert driver is not None
        driver.terminate()
        await greenlet_spawn(pooled.invalidate)
    await greenlet_spawn(pooled.close)


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a sessionmaker binds its sessions to."""
    bind = sessionmaker.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the sessionmaker is not bound to one AsyncEngine")
    return bind
