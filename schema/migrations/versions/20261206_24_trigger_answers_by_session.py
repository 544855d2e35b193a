"""Erasing a session finds the answers triggers kept for it by an index.

A trigger keeps the answer it gave each delivery (``trigger_deliveries.result``, which
names the session the delivery started) so a delivery sent again gets the same answer.
Erasing a session deletes the answers that name it: with no index on the name, every
erasure read every answer of every trigger, and the retention sweep erases session after
session. The index is over the session the answer names.

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


def upgrade() -> None:
    # Built while triggers take deliveries (schema/online_ddl.py).
    create_index_online(INDEX, "ON trigger_deliveries ((result ->> 'session_id'))")


def downgrade() -> None:
    drop_index_online(INDEX)
