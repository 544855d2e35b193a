"""``vigil_context_read`` reads by index whatever the session's length.

Two of its reads filtered every row of the session: the newest summary's key (the
session's events of that kind, sorted) and what is newer than the worker's kept window
(``seq > after_seq OR seq = ANY(gaps)``, which an index answers only as a scan of the
session). PostgreSQL runs a function's statements with a plan made once for any argument
when that plan looks no dearer, and without statistics on a session's size the plans
read a long session's rows one by one: at step 1,000 of a session the read took about
2.5 ms longer than at step 10 (``tests/integration/test_context_read_length.py`` counts
the buffers it touches).

Now the newest summary is one probe per kind of an index on (session_id, kind, -id), and
the messages are the index's range after the kept window, and the gaps within it only when
there are some (a condition on the argument alone, which PostgreSQL checks before it
plans to read anything: a kept window seldom has gaps). With gaps, a plan made without
useful statistics may still read the session's rows to find them.
The index orders by ``-id`` so that no plan can take the newest event of a kind by walking
the primary key backwards and filtering: that walk is quick for a session that wrote last
and crosses every newer row of every other session for one that did not. The function's
text is rewritten in place, as in migration 20261203_19.

Revision ID: 20261204_20
Revises: 20261203_19
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from vigil.schema.online_ddl import create_index_online, drop_index_online

revision = "20261204_20"
down_revision = "20261203_19"
branch_labels = None
depends_on = None

CONTEXT_READ = (
    "vigil_context_read(text, integer, text[], text, integer, integer[], integer, boolean, "
    "bigint[], integer)"
)
INDEX = "ix_events_session_id_kind_newest"
_MESSAGES = (
    "SELECT m.session_id, m.seq, m.role, m.content, m.content_enc, m.step, m.name, "
    "m.tool_calls, m.tool_call_id, m.created_at FROM messages m"
)
_IN = "\n" + " " * 20  # the indentation of the statements' lines in the function's text

SUMMARY_BY_SORT = (
    "SELECT e.key INTO newest_summary_key FROM events e\n"
    "            WHERE e.session_id = sid AND e.kind = ANY(summary_kinds)\n"
    "            ORDER BY e.id DESC LIMIT 1;"
)
SUMMARY_BY_INDEX = (
    "SELECT n.key INTO newest_summary_key\n"
    "            FROM unnest(summary_kinds) AS k(kind)\n"
    "            CROSS JOIN LATERAL (\n"
    "                SELECT e.id, e.key FROM events e\n"
    "                WHERE e.session_id = sid AND e.kind = k.kind\n"
    "                ORDER BY -e.id LIMIT 1\n"
    "            ) n\n"
    "            ORDER BY n.id DESC LIMIT 1;"
)
NEWER_BY_FILTER = (
    _MESSAGES + _IN + "WHERE m.session_id = sid AND (m.seq > after_seq OR m.seq = ANY(gap_seqs))"
)
NEWER_BY_RANGES = (
    _MESSAGES
    + _IN
    + "WHERE m.session_id = sid AND m.seq > after_seq"
    + _IN
    + "UNION ALL"
    + _IN
    + _MESSAGES
    + _IN
    + "WHERE cardinality(gap_seqs) > 0 AND m.session_id = sid"
    + _IN
    + "AND m.seq = ANY(ARRAY(SELECT g FROM unnest(gap_seqs) AS g WHERE g <= after_seq))"
)


def _rewrite_context_read(*changes: tuple[str, str]) -> None:
    """Replace each ``old`` by its ``new`` in the function's definition (exactly once)."""
    body = str(
        op.get_bind()
        .execute(text(f"SELECT pg_get_functiondef('{CONTEXT_READ}'::regprocedure)"))
        .scalar_one()
    )
    for old, new in changes:
        if body.count(old) != 1:
            raise RuntimeError(f"vigil_context_read: expected {old!r} once in its definition")
        body = body.replace(old, new)
    op.execute(body)


def upgrade() -> None:
    # Built while the events table takes writes (schema/online_ddl.py).
    create_index_online(INDEX, "ON events (session_id, kind, (-id))")
    _rewrite_context_read((SUMMARY_BY_SORT, SUMMARY_BY_INDEX), (NEWER_BY_FILTER, NEWER_BY_RANGES))


def downgrade() -> None:
    _rewrite_context_read((SUMMARY_BY_INDEX, SUMMARY_BY_SORT), (NEWER_BY_RANGES, NEWER_BY_FILTER))
    drop_index_online(INDEX)
