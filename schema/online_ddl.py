"""Index builds that keep a table writable, for migrations of tables that already hold rows.

A plain ``CREATE INDEX`` holds every write to its table off for the whole build (and a
plain ``DROP INDEX`` takes the table's strongest lock), so upgrading a deployment whose
workers keep writing would stall them for as long as the build of an index over millions
of rows lasts. ``CONCURRENTLY`` builds while the table takes writes; PostgreSQL refuses it
inside a transaction, so these run in an autocommit block of the migration (what the
migrations before it did is committed first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alembic import op
from sqlalchemy import text


def create_index_online(name: str, definition: str) -> None:
    """``CREATE INDEX CONCURRENTLY name definition`` (``definition``: ``ON table (...)``).

    A concurrent build that failed part way (a cancel, a lost connection) leaves an invalid
    index of that name behind: it is dropped and built again. A valid one is kept, so a
    migration run again after a failure later on does not build it twice."""
    with op.get_context().autocommit_block():
        if op.get_context().as_sql:  # a script to read or run by hand
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")
            return
        with no_lock_timeout():
            valid = (
                op.get_bind()
                .execute(
                    text(
                        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:n)"
                    ),
                    {"n": name},
                )
                .scalar_one_or_none()
            )
            if valid:
                return
            if valid is False:
                op.execute(f"DROP INDEX CONCURRENTLY {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY {name} {definition}")


def drop_index_online(name: str) -> None:
    """``DROP INDEX CONCURRENTLY IF EXISTS name``: waits for the transactions using the
    index instead of locking its table against them."""
    with op.get_context().autocommit_block():
        if op.get_context().as_sql:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            return
        with no_lock_timeout():
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


@contextlib.contextmanager
def no_lock_timeout() -> Iterator[None]:
    """For a statement that waits for the transactions open on its table without holding
    the table's readers or writers off meanwhile (a concurrent build or drop, ``ANALYZE``):
    the upgrade's ``lock_timeout`` (meant for the statements that do, workers/db.py) is
    lifted around it, in an autocommit block, and put back after. ``RESET`` goes back to
    the value the connection was opened with (the upgrade's), not the server's default.

    What a migration runs before its autocommit block is committed there; an upgrade
    stopped by a lock it waited for too long is run again from the top of that migration,
    so each statement before the block must be safe to run twice."""
    op.execute("SET lock_timeout = 0")
    try:
        yield
    finally:
        op.execute("RESET lock_timeout")
