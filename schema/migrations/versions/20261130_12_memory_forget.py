"""Memories can be forgotten: kept with who forgot them, when and why, never recalled.

A memory is never deleted by forgetting it (erasure is what removes rows): the row stays
for the agent's history with ``forgotten_at``, ``forgotten_by`` and ``forget_reason``,
and every recall and dedupe path skips it. The full-text candidate function skips it too.

Revision ID: 20261130_12
Revises: 20261130_11
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261130_12"
down_revision = "20261130_11"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
AGENT = "current_setting('vigil.agent_id', true)"


def _text_candidates(definer: str, forgotten_filter: str) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION vigil_memory_text_candidates(
            query tsquery, kinds text[], since timestamptz, until timestamptz,
            live_only boolean, n integer
        ) RETURNS TABLE (id bigint, rank_cd real) LANGUAGE plpgsql {definer} AS $$
        BEGIN
            RETURN QUERY
            SELECT m.id, ts_rank_cd(m.tsv, query, 1) FROM memories m
            WHERE m.agent_id = {AGENT} AND m.tsv @@ query
              AND (kinds IS NULL OR m.kind = ANY(kinds))
              AND (since IS NULL OR m.created_at >= since)
              AND (until IS NULL OR m.created_at < until)
              AND (NOT live_only OR m.superseded_by IS NULL){forgotten_filter}
            ORDER BY 2 DESC, m.id
            LIMIT n;
        END
        $$
        """


def _definer() -> str:
    schema = op.get_bind().execute(text("SELECT current_schema()")).scalar_one()
    quoted = '"' + schema.replace('"', '""') + '"'
    return f"STABLE SECURITY DEFINER SET search_path = {quoted}, pg_temp"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE memories ADD COLUMN forgotten_at timestamptz, "
        "ADD COLUMN forgotten_by text, ADD COLUMN forget_reason text"
    )
    op.execute(f"GRANT UPDATE (forgotten_at, forgotten_by, forget_reason) ON memories TO {ROLE}")
    op.execute(_text_candidates(_definer(), "\n              AND m.forgotten_at IS NULL"))


def downgrade() -> None:
    op.execute(_text_candidates(_definer(), ""))
    op.execute(
        "ALTER TABLE memories DROP COLUMN forgotten_at, DROP COLUMN forgotten_by, "
        "DROP COLUMN forget_reason"
    )
