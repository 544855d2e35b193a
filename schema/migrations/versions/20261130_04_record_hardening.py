"""Record hardening: a message of any size can be recorded; memory writes are keyed.

Messages. The full-text vector of a message covers its first 100,000 characters: PostgreSQL
refuses a tsvector over 1 MB ("string is too long for tsvector"), which a model reply of
a few megabytes of text reaches, so such a reply could not be recorded at all. Search
still finds a long message by its beginning. PostgreSQL 16 cannot change a generated
column's expression in place, so the column and its index are rebuilt (the table is
rewritten once).

Memory writes. ``memory_writes`` holds the result of each keyed memory write (the
``remember`` tool's call, a session's outcome), under the primary key (agent_id,
write_key): a retried activity that runs ``remember`` again after a worker died finds
the first result instead of merging into the row the first run inserted. A merge creates
no memory row, so the key cannot live on ``memories`` alone. Rows go with their memory
and with their session (ON DELETE CASCADE), and agents see only their own (row-level
security, as on ``memories``).

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
ROLE = "vigil_agent"
AGENT = "current_setting('vigil.agent_id', true)"


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
    op.execute(
        """
        CREATE TABLE memory_writes (
            agent_id varchar(200) NOT NULL,
            write_key text NOT NULL,
            session_id varchar(200) REFERENCES sessions(id) ON DELETE CASCADE,
            memory_id bigint NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            action varchar(16) NOT NULL,
            similarity double precision,
            superseded_ids bigint[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_memory_writes PRIMARY KEY (agent_id, write_key)
        )
        """
    )
    op.execute("CREATE INDEX ix_memory_writes_memory_id ON memory_writes (memory_id)")
    op.execute("CREATE INDEX ix_memory_writes_session_id ON memory_writes (session_id)")
    op.execute(f"GRANT SELECT, INSERT ON memory_writes TO {ROLE}")
    op.execute("ALTER TABLE memory_writes ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY agent_isolation ON memory_writes FOR ALL TO {ROLE} "
        f"USING (agent_id = {AGENT}) WITH CHECK (agent_id = {AGENT})"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS memory_writes")
    _message_tsv("content")
