"""Acting for one agent: a transaction that row-level security confines to its rows.

The application connects as the owner of the tables (system work: archival, sweeping,
migrations). Work done on behalf of an agent runs inside ``acting_for``, which switches
the transaction to the NOLOGIN role ``vigil_agent`` and names the agent; the policies of
migrations ``20261121_02`` and ``20261130_05`` then hide and protect every other agent's
rows, whatever the query, and keep the agent's own transcript append-only. One statement
switches in (and one back, when nested in a caller's transaction), whatever the number
of statements the block runs. Both settings are transaction-local, so a pooled
connection never keeps them; the exception is ``bound_acting_for``, whose connections
live in a pool of their own that nothing else draws from and stay in the agent role
between uses, re-bound whenever they are asked to act for another agent.

This guards vigil's own queries against mistakes; it is not a sandbox for arbitrary SQL
written by an agent, since the session user could ``RESET ROLE``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.lean import (
    LeanTransaction,
    Statements,
    lean_bound,
    lean_transaction,
    set_configs,
    xact_lock,
)
from vigil.activities.record.sql import sql

AGENT_ROLE = "vigil_agent"
AGENT_SETTING = "vigil.agent_id"
MAINTENANCE_SETTING = "vigil.record_maintenance"

S = TypeVar("S", bound=Statements)

# One round trip each way: the role and the agent are both set by set_config, which for
# ``role`` is exactly SET LOCAL ROLE (the same privilege check).
_ENTER = sql("SELECT set_config('role', :role, true), set_config(:name, :agent, true)")
_LEAVE = sql("SELECT set_config('role', 'none', true), set_config(:name, '', true)")


async def _enter(db: Statements, agent_id: str) -> None:
    if not agent_id:
        raise ValueError("acting_for needs a non-empty agent id")
    await db.execute(_ENTER, {"role": AGENT_ROLE, "name": AGENT_SETTING, "agent": agent_id})


async def _leave(db: Statements) -> None:
    await db.execute(_LEAVE, {"name": AGENT_SETTING})


async def record_maintenance(db: DbSession) -> None:
    """Declare, for the rest of ``db``'s transaction, that it may change or remove
    messages and events (archival pruning, erasure): system work only.

    The record is append-only in the database: a trigger refuses UPDATE, DELETE and
    TRUNCATE of messages and events to every role unless this was declared, and the
    agent role has no such privileges at all, declared or not.
    """
    await db.execute(sql("SELECT set_config(:name, 'on', true)"), {"name": MAINTENANCE_SETTING})


@asynccontextmanager
async def acting_for(
    source: async_sessionmaker[DbSession] | DbSession, agent_id: str
) -> AsyncIterator[DbSession]:
    """Yield a database session whose transaction sees and touches only ``agent_id``'s rows.

    Given a sessionmaker, a new session and transaction are opened and committed on a
    clean exit (rolled back on an error). Given a session with no transaction in
    progress, a transaction is begun on it the same way. Given a session already inside
    a transaction, the role is switched for the block only and switched back after it,
    and committing stays the caller's business.
    """
    if isinstance(source, DbSession):
        db = source
        if db.in_transaction():
            async with acting_inside(db, agent_id):
                yield db
            return
        async with db.begin():
            await _enter(db, agent_id)
            yield db
        return
    async with source() as db, db.begin():
        await _enter(db, agent_id)
        yield db


async def acting_until_the_end(db: Statements, agent_id: str) -> None:
    """For the rest of ``db``'s transaction (begun already, by the caller, who commits
    it), act for ``agent_id``: one round trip, none to switch back (``SET LOCAL`` ends with
    the transaction). For a transaction's last statements."""
    await _enter(db, agent_id)


@asynccontextmanager
async def acting_inside(db: S, agent_id: str) -> AsyncIterator[S]:
    """For the block, ``db``'s transaction (begun already, by the caller, who commits it)
    acts for ``agent_id``; it is switched back after the block."""
    await _enter(db, agent_id)
    try:
        yield db
    except BaseException:
        # An aborted transaction refuses the switch back, and a connection the failure
        # broke (a statement cut short) cannot even be asked: the caller's rollback undoes
        # the SET LOCAL then, and the block's own error is what the caller hears. A usable
        # one is switched back right away.
        with contextlib.suppress(Exception):
            await _leave(db)
        raise
    await _leave(db)


@asynccontextmanager
async def lean_acting_for(
    engine: AsyncEngine,
    agent_id: str,
    *,
    settings: Mapping[str, str] | None = None,
    lock: str | None = None,
) -> AsyncIterator[LeanTransaction]:
    """``acting_for`` as a lean transaction (``record.lean``): for the session step's own
    short transactions, whose statements are the record's hot-path functions.
    ``settings``: more of the transaction's own settings (``SET LOCAL``), sent with it.
    ``lock``: a transaction-level advisory lock on this text's hash, taken with it too
    (the block's first statement then sees every write its holders committed). The wait
    for it is part of ``BEGIN``: no statement span shows it, and a ``lock_timeout`` or
    ``statement_timeout`` among ``settings`` does not bound it (set in the same statement)."""
    if not agent_id:
        raise ValueError("acting_for needs a non-empty agent id")
    # The switch (and the lock) ride with BEGIN: one round trip for all.
    enter = set_configs(
        {"role": AGENT_ROLE, AGENT_SETTING: agent_id, **(settings or {})}, local=True
    )
    if lock is not None:
        enter += f", {xact_lock(lock)}"
    async with lean_transaction(engine, then=f"SELECT {enter}") as tx:
        yield tx


@asynccontextmanager
async def bound_acting_for(
    engine: AsyncEngine, agent_id: str, *, settings: Mapping[str, str] | None = None
) -> AsyncIterator[LeanTransaction]:
    """Statements acting for ``agent_id``, each a transaction of its own, on a connection
    that stays in the agent role between uses (``record.lean.lean_bound``): one round trip
    a statement once the connection acts for this agent, one more when it acted for
    another. For the step's one-statement writes and recall's searches. ``settings``:
    more session settings the statements need (``hnsw.ef_search``)."""
    if not agent_id:
        raise ValueError("acting_for needs a non-empty agent id")
    async with lean_bound(
        engine, {"role": AGENT_ROLE, AGENT_SETTING: agent_id, **(settings or {})}
    ) as db:
        yield db
