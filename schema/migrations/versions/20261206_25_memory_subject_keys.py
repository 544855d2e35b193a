"""A memory's subject key folds every case and every spelling of one subject.

A subject is how an agent's memories supersede one another: what it knows of "Café"
replaces what it knew of "café". The key was ``lower(subject)``, computed by PostgreSQL,
whose ``lower`` follows the database's locale: under the C locale (the embedded server's,
and a common one) it folded only ASCII letters, so "CAFÉ" and "café" were two subjects;
and two spellings that read the same but are other code points (a composed or a
decomposed "é", full-width letters, a ligature) were two subjects in any locale.

Writers now keep a subject in Unicode's NFKC form and write its key themselves, the
NFKC form case-folded (``activities.memory.values.subject_key``), so the key is the same
whatever the database's locale. This brings the rows kept before into that form: their
subjects normalised (in a UTF-8 database), the column made a plain one (its values kept),
and the keys of subjects with a character beyond ASCII written again (an ASCII key was
already its case fold).

Revision ID: 20261206_25
Revises: 20261206_24
Create Date: 2026-12-06
"""

from __future__ import annotations

import unicodedata

from alembic import op
from sqlalchemy import text

revision = "20261206_25"
down_revision = "20261206_24"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
BATCH = 1000


def _key(subject: str) -> str:
    # As activities.memory.values.subject_key (a migration does not import the product).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", subject).casefold())


def upgrade() -> None:
    bind = op.get_bind()
    # PostgreSQL normalises Unicode only in a UTF-8 database.
    if bind.execute(text("SHOW server_encoding")).scalar() == "UTF8":
        op.execute(
            "UPDATE memories SET subject = normalize(subject, NFKC) "
            "WHERE subject IS NOT NULL AND subject IS NOT NFKC NORMALIZED"
        )
    op.execute("ALTER TABLE memories ALTER COLUMN subject_key DROP EXPRESSION")
    op.execute(f"GRANT INSERT (subject_key) ON memories TO {ROLE}")
    op.execute(
        "COMMENT ON COLUMN memories.subject_key IS "
        "'the subject in NFKC form, case-folded, for matching (written by vigil)'"
    )
    after = 0
    while True:
        rows = bind.execute(
            text(
                "SELECT id, subject FROM memories WHERE id > :after AND subject IS NOT NULL "
                "AND subject ~ '[^\\x01-\\x7f]' ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            break
        for row in rows:
            bind.execute(
                text("UPDATE memories SET subject_key = :key WHERE id = :id"),
                {"key": _key(row.subject), "id": row.id},
            )
        after = rows[-1].id


def downgrade() -> None:
    op.execute(f"REVOKE INSERT (subject_key) ON memories FROM {ROLE}")
    op.execute("DROP INDEX IF EXISTS ix_memories_agent_kind_subject_key")
    op.execute("ALTER TABLE memories DROP COLUMN subject_key")
    op.execute(
        "ALTER TABLE memories ADD COLUMN subject_key text "
        "GENERATED ALWAYS AS (lower(subject)) STORED"
    )
    op.execute(
        "CREATE INDEX ix_memories_agent_kind_subject_key "
        "ON memories (agent_id, kind, subject_key) WHERE subject_key IS NOT NULL"
    )
