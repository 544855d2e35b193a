"""Full-text search folds every letter's case and every spelling, whatever the locale.

Messages and memories are searched through their ``tsv`` column, ``to_tsvector`` of the
text, whose parser lower-cases words by the database's locale: under the C locale (the
embedded server's, and a common one) only ASCII letters, so "Über" and "über", "CAFÉ" and
"café" were different words, and a query in one case missed text in the other. In every
locale a full-width "ＡＰＩ" or a ligature was a word of its own.

``vigil_fold(text)`` gives the text's NFKC form lower-cased by a Unicode-aware collation
(the database's own when its character type is not C; else ``C.utf8`` or ICU's where the
server has one). The columns become plain ones kept by a trigger from the folded text,
and the searches fold their queries the same way (``activities.record.reads``,
``activities.memory.search``).

Online, mostly: dropping the columns' expressions and adding the triggers lock the two
tables for a moment (no rewrite; the lock waits for transactions open on them, and writes
queue behind it meanwhile, as behind any ALTER TABLE); that is committed before the rows holding non-ASCII text get their
folded words again, a batch of ids to a transaction while the tables take writes (an
ASCII text's words do not change). A worker of the build before searches with an unfolded
query meanwhile, which still matches ASCII words.

Revision ID: 20261206_26
Revises: 20261206_25
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261206_26"
down_revision = "20261206_25"
branch_labels = None
depends_on = None

BATCH = 5000
"""Ids a backfill statement covers."""
SEARCHED_CHARS = 100_000
"""As 20261130_04: a message's words are read from its first this many characters."""

WORDS = {
    "messages": f"left({{row}}content, {SEARCHED_CHARS})",
    "memories": "coalesce({row}subject, '') || ' ' || {row}content",
}
"""Each table's searched text, as its generated column read it (``row``: ``NEW.`` in the
trigger)."""
SOURCES = {"messages": "content", "memories": "subject, content"}
"""The columns its words come from (an update of one of them refreshes them)."""
RECORD = {"messages"}
"""Tables under the session record's append-only trigger (updated as record maintenance)."""


def _fold_body() -> str:
    """The folding expression this database can evaluate, over ``$1``."""
    bind = op.get_bind()
    if bind.execute(text("SHOW server_encoding")).scalar() != "UTF8":
        return "lower($1)"  # normalize() needs a UTF-8 database
    ctype = bind.execute(
        text("SELECT datctype FROM pg_database WHERE datname = current_database()")
    ).scalar()
    provider = bind.execute(
        text(
            "SELECT CASE WHEN current_setting('server_version_num')::int >= 150000 "
            "THEN (SELECT datlocprovider::text FROM pg_database "
            "      WHERE datname = current_database()) ELSE 'c' END"
        )
    ).scalar()
    if ctype not in ("C", "POSIX") or provider != "c":
        return "lower(normalize($1, NFKC))"  # the database's own casing knows Unicode
    for name in ("C.utf8", "C.UTF-8", "und-x-icu"):
        found = bind.execute(
            text(
                "SELECT 1 FROM pg_collation WHERE collname = :n "
                "AND collencoding IN (-1, pg_char_to_encoding('UTF8'))"
            ),
            {"n": name},
        ).scalar()
        if found:
            return f'lower(normalize($1, NFKC) COLLATE "{name}")'
    return "lower(normalize($1, NFKC))"  # ASCII case only: no Unicode collation here


def _text(table: str, row: str = "") -> str:
    return WORDS[table].format(row=row)


def _words(table: str, row: str = "") -> str:
    return f"to_tsvector('english', vigil_fold({_text(table, row)}))"


def upgrade() -> None:
    op.execute(
        "CREATE FUNCTION vigil_fold(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT "
        f"PARALLEL SAFE AS $$ SELECT {_fold_body()} $$"
    )
    op.execute(
        "COMMENT ON FUNCTION vigil_fold(text) IS 'text in NFKC form, lower-cased by a "
        "Unicode-aware collation: what full-text search reads and queries'"
    )
    for table in WORDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN tsv DROP EXPRESSION")
        op.execute(
            f"""
            CREATE FUNCTION vigil_{table}_words() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.tsv := {_words(table, "NEW.")};
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(
            f"CREATE TRIGGER words_of_row BEFORE INSERT OR UPDATE OF {SOURCES[table]} "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION vigil_{table}_words()"
        )
        op.execute(
            f"COMMENT ON COLUMN {table}.tsv IS 'full-text vector of the folded text "
            "(vigil_fold), kept by a trigger (search)'"
        )
    with op.get_context().autocommit_block():
        for table in WORDS:
            _refresh(table)


def _refresh(table: str) -> None:
    """Give the rows whose text holds a non-ASCII character their folded words, a batch
    of ids to a transaction."""
    update = (
        f"UPDATE {table} SET tsv = {_words(table)} "
        f"WHERE octet_length({_text(table)}) <> char_length({_text(table)})"
    )
    if op.get_context().as_sql:  # a script to read or run by hand
        op.execute(update)
        return
    bind = op.get_bind()
    if table in RECORD:
        bind.execute(text("SELECT set_config('vigil.record_maintenance', 'on', false)"))
    try:
        last = bind.execute(text(f"SELECT max(id) FROM {table}")).scalar() or 0
        start = 0
        while start < last:
            bind.execute(
                text(f"{update} AND id > :a AND id <= :b"), {"a": start, "b": start + BATCH}
            )
            start += BATCH
    finally:
        if table in RECORD:
            bind.execute(text("SELECT set_config('vigil.record_maintenance', '', false)"))


def downgrade() -> None:
    for table in WORDS:
        op.execute(f"DROP TRIGGER IF EXISTS words_of_row ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS vigil_{table}_words()")
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_tsv")
        op.execute(f"ALTER TABLE {table} DROP COLUMN tsv")
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN tsv tsvector "
            f"GENERATED ALWAYS AS (to_tsvector('english', {_text(table)})) STORED"
        )
        op.execute(f"CREATE INDEX ix_{table}_tsv ON {table} USING gin (tsv)")
    op.execute("DROP FUNCTION vigil_fold(text)")
