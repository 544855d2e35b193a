"""Sessions found by a prefix of their id through an index, whatever the database's locale.

A conversation by key has sessions whose ids are its first session's id and that id
followed by ``-2``, ``-3``... (``workers/keyed.py``); a message by key looks them up by
that prefix. The primary key's index serves a prefix only where text sorts byte-wise
(the ``C`` locale, as the embedded stack's database): in a database that sorts by a
locale (``C.UTF-8``, ``en_US.UTF-8``: what many PostgreSQL installs and images are set up
with) the lookup read every session of the agent. An index in byte order
(``text_pattern_ops``) serves it in any locale
(``tests/integration/test_keyed_lookup.py`` counts the buffers it touches).

Revision ID: 20261204_21
Revises: 20261204_20
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "20261204_21"
down_revision = "20261204_20"
branch_labels = None
depends_on = None

INDEX = "ix_sessions_id_prefix"


def upgrade() -> None:
    op.execute(f"CREATE INDEX {INDEX} ON sessions (id text_pattern_ops)")


def downgrade() -> None:
    op.execute(f"DROP INDEX {INDEX}")
