"""A message's searched words include its tool calls: each call's name and arguments.

An assistant turn that only calls tools has no text, and the words of one that has text
came from the text alone: the URL an agent fetched, the name of the artifact it wrote, the
query it recalled with were in the record but no search found them. The words of a
message are now those of its text followed by ``vigil_call_words(tool_calls)``: each
call's name, then its arguments' values (the strings, numbers and booleans at any depth
of the JSON the model wrote; keys are left out, they are the tool's own names for its
parameters), or the arguments as written where they are not JSON. As before, the words
are read from the first 100,000 characters, folded (``vigil_fold``).

The trigger that keeps the words is replaced (a moment of the table's strongest lock, as
for any trigger), then the rows that carry tool calls get their words again, a batch of
ids to a transaction while the table takes writes. Every statement may run again, so an
upgrade stopped during the backfill is run again as it is. A worker of the build before
writes through the trigger, so its rows get the new words too.

Revision ID: 20261207_27
Revises: 20261206_26
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261207_27"
down_revision = "20261206_26"
branch_labels = None
depends_on = None

BATCH = 5000
"""Ids a backfill statement covers."""
SEARCHED_CHARS = 100_000
"""As 20261206_26: the words are read from this many characters of the text, folded and
cut to as many again."""

CALL_WORDS = r"""
CREATE OR REPLACE FUNCTION vigil_call_words(calls jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    call jsonb;
    args jsonb;
    parsed jsonb;
    words text := '';
BEGIN
    IF calls IS NULL OR jsonb_typeof(calls) <> 'array' THEN
        RETURN '';
    END IF;
    FOR call IN SELECT value FROM jsonb_array_elements(calls) LOOP
        CONTINUE WHEN jsonb_typeof(call) <> 'object';
        words := words || coalesce(call ->> 'name', '') || ' ';
        args := call -> 'arguments';
        CONTINUE WHEN args IS NULL;
        parsed := args;
        IF jsonb_typeof(args) = 'string' THEN
            BEGIN
                parsed := (args #>> '{}')::jsonb;
            EXCEPTION WHEN others THEN
                parsed := NULL;  -- not JSON: its words as written
            END;
        END IF;
        IF parsed IS NULL THEN
            words := words || (args #>> '{}') || ' ';
        ELSE
            words := words || coalesce((
                SELECT string_agg(v #>> '{}', ' ')
                FROM jsonb_path_query(
                    parsed,
                    'strict $.** ? (@.type() == "string" || @.type() == "number" '
                    '|| @.type() == "boolean")'
                ) AS v
            ), '') || ' ';
        END IF;
    END LOOP;
    RETURN rtrim(words);
END
$$
"""

WORDS = (
    "to_tsvector('english', left(vigil_fold(left({row}content, %(n)d) || E'\\n' || "
    "left(vigil_call_words({row}tool_calls), %(n)d)), %(n)d))"
)
"""A message's words: its text, then its calls' words (each part cut before folding, so
a long text leaves no room for them only past the first 100,000 characters)."""

OLD_WORDS = (
    "to_tsvector('english', left(vigil_fold(left({row}content, %(n)d)), %(n)d))"
)
"""20261206_26's words of a message."""


def _trigger(words: str, sources: str) -> None:
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION vigil_messages_words() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.tsv := {words.format(row="NEW.") % {"n": SEARCHED_CHARS}};
            RETURN NEW;
        END
        $$
        """
    )
    op.execute("DROP TRIGGER IF EXISTS words_of_row ON messages")
    op.execute(
        f"CREATE TRIGGER words_of_row BEFORE INSERT OR UPDATE OF {sources} "
        "ON messages FOR EACH ROW EXECUTE FUNCTION vigil_messages_words()"
    )


def upgrade() -> None:
    op.execute(CALL_WORDS)
    op.execute(
        "COMMENT ON FUNCTION vigil_call_words(jsonb) IS 'the searched words of a message''s "
        "tool calls: each name, then its arguments'' values (or the arguments as written "
        "where they are not JSON)'"
    )
    _trigger(WORDS, "content, tool_calls")
    op.execute(
        "COMMENT ON COLUMN messages.tsv IS 'full-text vector of the folded text and tool "
        "calls (vigil_fold, vigil_call_words), kept by a trigger (search)'"
    )
    with op.get_context().autocommit_block():
        _refresh(WORDS)


def _refresh(words: str) -> None:
    """The words of every row with tool calls again, a batch of ids to a transaction
    (record maintenance: the table is otherwise append-only)."""
    update = (
        f"UPDATE messages SET tsv = {words.format(row='') % {'n': SEARCHED_CHARS}} "
        "WHERE tool_calls IS NOT NULL AND jsonb_typeof(tool_calls) = 'array' "
        "AND jsonb_array_length(tool_calls) > 0"
    )
    bind = op.get_bind()
    bind.execute(text("SELECT set_config('vigil.record_maintenance', 'on', false)"))
    try:
        last = bind.execute(text("SELECT max(id) FROM messages")).scalar() or 0
        start = 0
        while start < last:
            bind.execute(
                text(f"{update} AND id > :a AND id <= :b"), {"a": start, "b": start + BATCH}
            )
            start += BATCH
    finally:
        bind.execute(text("SELECT set_config('vigil.record_maintenance', '', false)"))


def downgrade() -> None:
    _trigger(OLD_WORDS, "content")
    op.execute(
        "COMMENT ON COLUMN messages.tsv IS 'full-text vector of the folded text "
        "(vigil_fold), kept by a trigger (search)'"
    )
    with op.get_context().autocommit_block():
        _refresh(OLD_WORDS)
    op.execute("DROP FUNCTION IF EXISTS vigil_call_words(jsonb)")
