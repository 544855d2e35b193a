"""Record hardening: a message of any size can be recorded.

The full-text vector of a message covers its first 100,000 characters: PostgreSQL
refuses a tsvector over 1 MB ("string is too long for tsvector"), which a model reply of
a few megabytes of text reaches, so such a reply could not be recorded at all. Search
still finds a long message by its beginning. PostgreSQL 16 cannot change a generated
column's expression in place, so the column and its index are rebuilt (the table is
rewritten once).

Revision ID: 20261130_04
Revises: 20261121_03
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_04"
down_revision = "20261121_03"
branch_labels = None
depends_on = None

SEARCHED_CHARS = 100_000


def _message_tsv(expression: str) -> None:
    # asyncpg prepares each statement: one statement per op.execute.
    op.execute("DROP INDEX IF EXISTS ix_messages_tsv")
    op.execute("ALTER TABLE messages DROP COLUMN tsv")
    op.execute(
        f"ALTER TABLE messages ADD COLUMN tsv tsvector "
        f"GENERATED ALWAYS AS (to_tsvector('english', {expression})) STORED"
    )
    op.execute("CREATE INDEX ix_messages_tsv ON messages USING gin (tsv)")


def upgrade() -> None:
    _message_tsv(f"left(content, {SEARCHED_CHARS})")


def downgrade() -> None:
    _message_tsv("content")
