"""The retention sweep reads what is due, not every ended session its agents keep.

The hourly sweep (``vigil-retention``) found the sessions due for archival or erasure by
reading every ended session of every agent with a policy: a policy that archives without
erasing keeps every archived row, so the read grew by a session for every one that ever
ended (40,000 rows read to find 7 due in ``tests/integration/test_retention_scale.py``).
Two indexes give each policy its range, in the order of the end: one over the ended
sessions (erasure: ended before the cutoff), one over those not archived (archival).

A session's end is now its ``finished_at`` alone (every end stamps it, and a session that
runs again, a reset run after the reconciler ended it, has it cleared until it ends again;
the sweep fell back to ``updated_at`` when it was missing): ended sessions without one are
given their last update's time here. Neither index holds a column a step changes (``updated_at``, ``step``,
the token counts), so a running session's row is still updated in place.

Revision ID: 20261205_22
Revises: 20261204_21
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vigil.schema.online_ddl import create_index_online, drop_index_online

revision = "20261205_22"
down_revision = "20261204_21"
branch_labels = None
depends_on = None

ENDED = "ix_sessions_agent_id_finished_at_id"
UNARCHIVED = "ix_sessions_unarchived_agent_id_finished_at_id"
FINAL = "('completed', 'failed', 'cancelled', 'budget_exhausted', 'timed_out', 'terminated')"


def upgrade() -> None:
    op.execute(
        f"UPDATE sessions SET finished_at = updated_at "
        f"WHERE finished_at IS NULL AND status IN {FINAL}"
    )
    # Built while the sessions table takes writes (schema/online_ddl.py).
    create_index_online(ENDED, "ON sessions (agent_id, finished_at, id) WHERE finished_at IS NOT NULL")
    create_index_online(
        UNARCHIVED,
        "ON sessions (agent_id, finished_at, id) "
        "WHERE finished_at IS NOT NULL AND archive_uri IS NULL",
    )


def downgrade() -> None:
    drop_index_online(UNARCHIVED)
    drop_index_online(ENDED)
