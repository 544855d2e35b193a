"""Full-text search folds every letter's case and every spelling, whatever the locale.

Messages and memories are searched through their ``tsv`` column, ``to_tsvector`` of the
text, whose parser lower-cases words by the database's locale: under the C locale (the
embedded server's, and a common one) only ASCII letters, so "Über" and "über", "CAFÉ" and
"café" were different words, and a query in one case missed text in the other. In every
locale a full-width "ＡＰＩ" or a ligature was a word of its own.

``vigil_fold(text)`` gives the text's NFKC form lower-cased by a Unicode-aware collation
(the database's own where its locale cases Unicode; else the first of ``pg_c_utf8``,
libc's ``C.utf8`` and ICU's ``und-x-icu`` the server has; ASCII letters only where it has
none). The columns become plain ones kept by a trigger from the folded text (cut, once
folded, to the 100,000 characters a message's words are read from: NFKC can lengthen a
character eighteen times, past what a tsvector holds), and the searches fold their
queries the same way (``activities.record.reads``, ``activities.memory.search``).

Online, mostly: dropping the columns' expressions and adding the triggers take each table's
strongest lock for a moment (no rewrite; it waits for the transactions open on the table,
and reads and writes queue behind it meanwhile, as behind any ALTER TABLE). That is
committed before the rows holding non-ASCII text get their folded words, a batch of ids to
a transaction while the tables take writes (an ASCII text's words do not change); every
statement before the backfill may run again, so an upgrade stopped during it is run again
as it is. A worker of the build before searches with an unfolded query meanwhile, which
still matches ASCII words.

Revision ID: 20261206_26
Revises: 20261206_25
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from vigil.schema.online_ddl import no_lock_timeout

revision = "20261206_26"
down_revision = "20261206_25"
branch_labels = None
depends_on = None

BATCH = 5000
"""Ids a backfill statement covers."""
SEARCHED_CHARS = 100_000
"""As 20261130_04: a message's words are read from its first this many characters; the
folded text is cut to as many again, as NFKC can lengthen a character eighteen times (a
tsvector holds at most 1 MB)."""

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
    # Columns of pg_database by the server's version (a query naming one a server lacks
    # fails as it is parsed, whatever its CASE says).
    version = int(bind.execute(text("SHOW server_version_num")).scalar() or 0)
    provider: str | None = "c"
    locale: str | None = None
    if version >= 150000:
        provider = bind.execute(
            text(
                "SELECT datlocprovider::text FROM pg_database WHERE datname = current_database()"
            )
        ).scalar()
    if version >= 170000:
        locale = bind.execute(
            text("SELECT datlocale FROM pg_database WHERE datname = current_database()")
        ).scalar()
    # Unicode's casing: ICU's, the builtin provider's C.UTF-8 (PostgreSQL 17), or a libc
    # locale other than C. The builtin and libc C locales case ASCII letters only.
    if provider == "i" or (provider == "b" and locale != "C") or (
        provider == "c" and ctype not in ("C", "POSIX")
    ):
        return "lower(normalize($1, NFKC))"
    # A collation of the server's that cases Unicode: the builtin one first (the same on
    # every host), then libc's and ICU's. The name is kept in the function: a dump
    # restored where it is missing fails on it (where it is, it folds alike).
    for name in ("pg_c_utf8", "C.utf8", "C.UTF-8", "und-x-icu"):
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
    folded = f"left(vigil_fold({_text(table, row)}), {SEARCHED_CHARS})"
    return f"to_tsvector('english', {folded})"


def upgrade() -> None:
    # Each statement may run again: the backfill below commits what came before it, so a
    # backfill that stopped part way leaves this revision to be run again from the top.
    op.execute(
        "CREATE OR REPLACE FUNCTION vigil_fold(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT "
        f"PARALLEL SAFE AS $$ SELECT {_fold_body()} $$"
    )
    op.execute(
        "COMMENT ON FUNCTION vigil_fold(text) IS 'text in NFKC form, lower-cased by a "
        "Unicode-aware collation: what full-text search reads and queries'"
    )
    for table in WORDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN tsv DROP EXPRESSION IF EXISTS")
        op.execute(
            f"""
            CREATE OR REPLACE FUNCTION vigil_{table}_words() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.tsv := {_words(table, "NEW.")};
                RETURN NEW;
            END
            $$
            """
        )
        op.execute(f"DROP TRIGGER IF EXISTS words_of_row ON {table}")
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
        # Recall reads the words' statistics (activities.memory.search): the folded ones.
        with no_lock_timeout():  # it holds no reader or writer off while it waits
            op.execute("ANALYZE memories")


def _refresh(table: str) -> None:
    """Give the rows whose text holds a non-ASCII character their folded words, a batch
    of ids to a transaction."""
    update = (
        f"UPDATE {table} SET tsv = {_words(table)} "
        f"WHERE octet_length({_text(table)}) <> char_length({_text(table)})"
    )
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
