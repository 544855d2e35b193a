"""Memories: an indexed lower-cased subject, usable under row-level security.

``lower(subject) = ...`` cannot use an index for the ``vigil_agent`` role because
``lower`` is not leakproof; equality on a stored column is, so supersede look-ups by
subject stay index scans however many memories an agent has.

Revision ID: 20261121_03
Revises: 20261121_02
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "20261121_03"
down_revision = "20261121_02"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE memories ADD COLUMN subject_key text "
        "GENERATED ALWAYS AS (lower(subject)) STORED"
    )
    op.execute(
        "CREATE INDEX ix_memories_agent_kind_subject_key "
        "ON memories (agent_id, kind, subject_key) WHERE subject_key IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_memories_agent_kind_subject_key")
    op.execute("ALTER TABLE memories DROP COLUMN IF EXISTS subject_key")
