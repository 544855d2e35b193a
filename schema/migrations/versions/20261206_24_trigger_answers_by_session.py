"""Erasing a session finds the answers triggers kept for it by index.

A trigger keeps the answer it gave each delivery (``trigger_deliveries.result``, which
names the session the delivery acted on, or says why it was refused) so a delivery sent
again gets the same answer. Erasing a session takes its id out of the answers that name
it: with no index on the name, every erasure read every answer of every trigger, and the
retention sweep erases session after session. One index is over the session an answer
names; a partial one holds the refusals (whose words may name a session) by trigger.

Revision ID: 20261206_24
Revises: 20261205_23
Create Date: 2026-12-06
"""

from __future__ import annotations

from vigil.schema.online_ddl import create_index_online, drop_index_online

revision = "20261206_24"
down_revision = "20261205_23"
branch_labels = None
depends_on = None

INDEX = "ix_trigger_deliveries_result_session_id"
REFUSALS = "ix_trigger_deliveries_refusals_trigger_name"


def upgrade() -> None:
    # Built while triggers take deliveries (schema/online_ddl.py).
    create_index_online(INDEX, "ON trigger_deliveries ((result ->> 'session_id'))")
    create_index_online(
        REFUSALS, "ON trigger_deliveries (trigger_name) WHERE status_code >= 400"
    )


def downgrade() -> None:
    drop_index_online(REFUSALS)
    drop_index_online(INDEX)
