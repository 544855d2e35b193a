"""Sessions listed newest first and paged by cursor: an index on (created_at, id).

The lists of the CLI and the HTTP API order by ``created_at DESC, id DESC`` and continue
after the last row seen (keyset paging, activities/record/sessions.py); a backward scan
of this index answers each page without sorting the table.

Revision ID: 20261130_11
Revises: 20261130_10
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_11"
down_revision = "20261130_10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_sessions_created_at_id ON sessions (created_at, id)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_sessions_created_at_id")
