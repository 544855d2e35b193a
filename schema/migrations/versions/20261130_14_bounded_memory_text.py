"""Bounded full-text candidates for memory recall: most words first, a capped scan.

``vigil_memory_text_candidates`` ranked every memory of the agent holding any word of the
query: on real text a plain question matches a large share of an agent's memories through
its common words, and ranking them all took a second at 100k memories. The new
``vigil_memory_text_search`` takes a ladder of queries (all the words, then all but one,
..., then any two, then any one; built by ``MemoryStore``), runs them in order through
the GIN index and stops as soon as it holds ``n`` candidates. Each step ranks at most
``scan_cap`` matching rows with ``ts_rank_cd`` against the whole query, so one recall
reads a bounded number of rows however common its words are.

Why a SECURITY DEFINER function: under the agent's row-level security policy the full-text
match ``tsv @@ query`` (``ts_match_vq``, not LEAKPROOF) may not run before the policy's
filter, so the planner cannot use it as a GIN index condition and scans the agent's rows
instead. As the owner the function is not subject to the policy; it searches only the
agent named by the transaction's own ``vigil.agent_id`` and returns ids and ranks (the
rows themselves are read afterwards under the policy). The statement inside is planned
for each call (EXECUTE), so the planner sees the actual words; with the transaction
setting ``vigil.explain_memory_search = on`` the function also sends each step's plan as
a NOTICE (how the tests check the GIN index is used when called as the agent).

The old function stays for workers not yet upgraded.

Revision ID: 20261130_14
Revises: 20261130_13
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261130_14"
down_revision = "20261130_13"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
SIGNATURE = (
    "vigil_memory_text_search(tsquery[], tsquery, text[], timestamptz, timestamptz, "
    "boolean, integer, integer)"
)


def upgrade() -> None:
    schema = op.get_bind().execute(text("SELECT current_schema()")).scalar_one()
    quoted = '"' + schema.replace('"', '""') + '"'
    op.execute(
        f"""
        CREATE FUNCTION vigil_memory_text_search(
            levels tsquery[], ranking tsquery, kinds text[], since timestamptz,
            until timestamptz, live_only boolean, n integer, scan_cap integer
        ) RETURNS TABLE (id bigint, rank_cd real, level integer)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = {quoted}, pg_temp AS $$
        DECLARE
            agent text := current_setting('vigil.agent_id', true);
            seen bigint[] := '{{}}';
            ids bigint[];
            ranks real[];
            line text;
            search_sql constant text :=
                'SELECT coalesce(array_agg(r.id ORDER BY r.rank DESC, r.id), ''{{}}''),
                        coalesce(array_agg(r.rank ORDER BY r.rank DESC, r.id), ''{{}}'')
                 FROM (
                     SELECT c.id, ts_rank_cd(c.tsv, $2, 1) AS rank FROM (
                         SELECT m.id, m.tsv FROM memories m
                         WHERE m.agent_id = $1 AND m.tsv @@ $3
                           AND m.forgotten_at IS NULL
                           AND NOT (m.id = ANY($4))
                           AND ($5 IS NULL OR m.kind = ANY($5))
                           AND ($6 IS NULL OR m.created_at >= $6)
                           AND ($7 IS NULL OR m.created_at < $7)
                           AND (NOT $8 OR m.superseded_by IS NULL)
                         LIMIT $9
                     ) AS c
                     ORDER BY 2 DESC, 1
                     LIMIT $10
                 ) AS r';
        BEGIN
            IF agent IS NULL OR agent = '' OR levels IS NULL THEN
                RETURN;
            END IF;
            FOR step IN 1 .. coalesce(array_length(levels, 1), 0) LOOP
                IF current_setting('vigil.explain_memory_search', true) = 'on' THEN
                    FOR line IN EXECUTE 'EXPLAIN ' || search_sql
                        USING agent, ranking, levels[step], seen, kinds, since, until,
                              live_only, scan_cap, n - cardinality(seen)
                    LOOP
                        RAISE NOTICE 'vigil_memory_text_search: %', line;
                    END LOOP;
                END IF;
                EXECUTE search_sql INTO ids, ranks
                USING agent, ranking, levels[step], seen, kinds, since, until, live_only,
                      scan_cap, n - cardinality(seen);
                RETURN QUERY SELECT u.id, u.rank, step FROM unnest(ids, ranks) AS u(id, rank);
                seen := seen || ids;
                EXIT WHEN cardinality(seen) >= n;
            END LOOP;
        END
        $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
