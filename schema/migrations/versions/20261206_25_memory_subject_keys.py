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
and every key that differs from the writers' written again, a batch of rows to a
statement. Dropping the column's expression locks the table until the upgrade commits:
the rows are read and their keys rewritten under that lock (memory writes wait; a step's
recall goes on without them after its time budget).

A worker of the build before still inserts without the key while the upgrade rolls out:
a trigger gives such a row ``lower(subject)``, the key that build matches by (the same
as the writers' for an ASCII subject), so no memory is left without one.

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
MAX_KEY_BYTES = 2600


def _key(subject: str) -> str:
    # As activities.memory.values: the subject as writers keep it (NFKC, stripped), its
    # key that case-folded (a migration does not import the product).
    kept = unicodedata.normalize("NFKC", subject).strip()
    return unicodedata.normalize("NFKC", kept.casefold())


def upgrade() -> None:
    bind = op.get_bind()
    # PostgreSQL normalises Unicode only in a UTF-8 database.
    if bind.execute(text("SHOW server_encoding")).scalar() == "UTF8":
        op.execute(
            "UPDATE memories SET subject = btrim(normalize(subject, NFKC)) "
            "WHERE subject IS NOT NULL AND subject IS NOT NFKC NORMALIZED"
        )
    op.execute("ALTER TABLE memories ALTER COLUMN subject_key DROP EXPRESSION")
    op.execute(f"GRANT INSERT (subject_key) ON memories TO {ROLE}")
    op.execute(
        "COMMENT ON COLUMN memories.subject_key IS "
        "'the subject in NFKC form, case-folded, for matching (written by vigil)'"
    )
    op.execute(
        """
        CREATE FUNCTION vigil_memories_subject_key() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.subject_key IS NULL AND NEW.subject IS NOT NULL THEN
                NEW.subject_key := lower(NEW.subject);
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER subject_key_of_row BEFORE INSERT ON memories FOR EACH ROW "
        "EXECUTE FUNCTION vigil_memories_subject_key()"
    )
    after = 0
    while True:
        rows = bind.execute(
            text(
                "SELECT id, subject, subject_key FROM memories "
                "WHERE id > :after AND subject IS NOT NULL ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": BATCH},
        ).all()
        if not rows:
            break
        # A key its case fold would make too long for the index (a subject near the
        # B-tree's 2.7 kB, stored before writers limited subjects to 2,000 bytes) keeps
        # the one it had.
        changed = [
            (r.id, key)
            for r in rows
            if (key := _key(r.subject)) != r.subject_key and len(key.encode()) <= MAX_KEY_BYTES
        ]
        if changed:
            bind.execute(
                text(
                    "UPDATE memories m SET subject_key = k.key "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[])) AS k(id, key) "
                    "WHERE m.id = k.id"
                ),
                {"ids": [i for i, _ in changed], "keys": [k for _, k in changed]},
            )
        after = rows[-1].id


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS subject_key_of_row ON memories")
    op.execute("DROP FUNCTION IF EXISTS vigil_memories_subject_key()")
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
