"""Isolation on every path, an append-only record, erasure receipts, retention policies.

Row-level security (``20261121_02``) confined what ``vigil_agent`` sees; this closes what
it could still learn or change:

* Artifacts: an agent may link only bytes it holds. ``artifact_holders`` names, per
  artifact, the agents whose work stored those bytes; the system writes it (registering
  bytes is system work: the row is written only once the bytes are durably stored), the
  agent only reads it. An artifact row is visible to an agent that holds it.
* Existence oracles: the agent role inserts no session, agent or artifact row (the system
  creates them), never chooses a row id (column grants leave ``id`` out), and
  ``superseded_by`` must name a memory of the same agent (a trigger, checked before the
  foreign key, so another agent's id and an unused id are refused alike).
* Append-only: the agent role has no UPDATE or DELETE on messages and events, and may
  change a session row only in the columns a run moves. Triggers refuse UPDATE, DELETE
  and TRUNCATE of messages and events to every role unless the transaction declared
  record maintenance (``vigil.record_maintenance = on``: archival pruning and erasure).
* Full-text search under the policies: a policy keeps PostgreSQL from using a GIN index
  for a non-leakproof match, so two SECURITY DEFINER functions search the *current*
  agent's messages and memories (the agent comes from ``vigil.agent_id``, never from an
  argument) and return ids that the caller then reads under the policies.

Two tables for governance, invisible to the agent role: ``erasure_receipts`` (what was
erased, when, by whom, how much) and ``retention_policies`` (per agent).

Revision ID: 20261130_05
Revises: 20261121_03
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261130_05"
down_revision = "20261130_04"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
AGENT = "current_setting('vigil.agent_id', true)"
RECORD = ("messages", "events")
TABLES = ("agents", "sessions", "messages", "events", "artifacts", "artifact_links", "memories")
# What the agent role may write, column by column (row ids and timestamps are the system's).
COLUMN_GRANTS = (
    (
        "UPDATE (status, step, goal, summary, run_count, tokens_in, tokens_out, cost_usd, "
        "updated_at, finished_at)",
        "sessions",
    ),
    (
        "INSERT (session_id, agent_id, seq, role, content, content_enc, name, tool_calls, "
        "tool_call_id, step)",
        "messages",
    ),
    ("INSERT (session_id, agent_id, key, kind, step, actor, reason, payload)", "events"),
    ("INSERT (agent_id, session_id, name, sha256), UPDATE (sha256, created_at)", "artifact_links"),
    (
        "INSERT (agent_id, kind, subject, content, importance, dim, embedding, "
        "source_session_id, metadata, created_at), "
        "UPDATE (importance, metadata, superseded_by, superseded_at)",
        "memories",
    ),
)


def upgrade() -> None:
    schema = op.get_bind().execute(text("SELECT current_schema()")).scalar_one()
    # asyncpg prepares each statement: one statement per op.execute.
    op.execute(
        """
        CREATE TABLE artifact_holders (
            sha256 varchar(64) NOT NULL REFERENCES artifacts(sha256) ON DELETE CASCADE,
            agent_id varchar(200) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_artifact_holders PRIMARY KEY (sha256, agent_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_artifact_holders_agent_id ON artifact_holders (agent_id)")
    op.execute(
        "INSERT INTO artifact_holders (sha256, agent_id) "
        "SELECT DISTINCT sha256, agent_id FROM artifact_links ON CONFLICT DO NOTHING"
    )
    op.execute("ALTER TABLE artifact_holders ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY agent_isolation ON artifact_holders FOR SELECT TO {ROLE} "
        f"USING (agent_id = {AGENT})"
    )
    op.execute(f"GRANT SELECT ON artifact_holders TO {ROLE}")

    op.execute("DROP POLICY agent_links ON artifacts")
    op.execute("DROP POLICY agent_insert ON artifacts")
    op.execute(
        f"CREATE POLICY agent_holders ON artifacts FOR SELECT TO {ROLE} USING "
        "(EXISTS (SELECT 1 FROM artifact_holders h WHERE h.sha256 = artifacts.sha256))"
    )
    op.execute("DROP POLICY agent_isolation ON artifact_links")
    op.execute(
        f"CREATE POLICY agent_isolation ON artifact_links FOR ALL TO {ROLE} "
        f"USING (agent_id = {AGENT}) WITH CHECK (agent_id = {AGENT} "
        "AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = artifact_links.session_id) "
        "AND EXISTS (SELECT 1 FROM artifact_holders h WHERE h.sha256 = artifact_links.sha256))"
    )

    op.execute(f"REVOKE INSERT, UPDATE ON {', '.join(TABLES)} FROM {ROLE}")
    for privileges, table in COLUMN_GRANTS:
        op.execute(f"GRANT {privileges} ON {table} TO {ROLE}")

    op.execute(
        """
        CREATE FUNCTION vigil_record_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('vigil.record_maintenance', true) IS DISTINCT FROM 'on' THEN
                RAISE EXCEPTION 'the session record is append-only: % of % refused',
                    TG_OP, TG_TABLE_NAME
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'archival and erasure declare record maintenance';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table in RECORD:
        op.execute(
            f"CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION vigil_record_append_only()"
        )

    # Invoker's rights: acting for an agent, the look-up sees only that agent's memories.
    op.execute(
        """
        CREATE FUNCTION vigil_memories_same_agent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.superseded_by = NEW.id OR NOT EXISTS (
                SELECT 1 FROM memories m
                WHERE m.id = NEW.superseded_by AND m.agent_id = NEW.agent_id
            ) THEN
                RAISE EXCEPTION 'superseded_by must name another memory of the same agent'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER same_agent_supersede BEFORE INSERT OR UPDATE OF superseded_by "
        "ON memories FOR EACH ROW WHEN (NEW.superseded_by IS NOT NULL) "
        "EXECUTE FUNCTION vigil_memories_same_agent()"
    )

    quoted = '"' + schema.replace('"', '""') + '"'
    definer = f"STABLE SECURITY DEFINER SET search_path = {quoted}, pg_temp"
    # PL/pgSQL rather than SQL: its plan cache plans the first calls with the actual
    # query (custom plans), so the planner weighs the GIN index with real estimates.
    op.execute(
        f"""
        CREATE FUNCTION vigil_search_messages(
            query tsquery, in_session text, lim integer, skip integer
        ) RETURNS TABLE (id bigint, rank real) LANGUAGE plpgsql {definer} AS $$
        BEGIN
            RETURN QUERY
            SELECT m.id, ts_rank_cd(m.tsv, query) FROM messages m
            WHERE m.agent_id = {AGENT} AND m.tsv @@ query
              AND (in_session IS NULL OR m.session_id = in_session)
            ORDER BY 2 DESC, m.session_id, m.seq
            LIMIT lim OFFSET skip;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION vigil_memory_text_candidates(
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
              AND (NOT live_only OR m.superseded_by IS NULL)
            ORDER BY 2 DESC, m.id
            LIMIT n;
        END
        $$
        """
    )
    for function in (
        "vigil_search_messages(tsquery, text, integer, integer)",
        "vigil_memory_text_candidates(tsquery, text[], timestamptz, timestamptz, boolean, "
        "integer)",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {ROLE}")

    op.execute(
        """
        CREATE TABLE erasure_receipts (
            id bigserial PRIMARY KEY,
            subject_kind varchar(16) NOT NULL,
            subject_id varchar(200) NOT NULL,
            requested_by text NOT NULL,
            reason text,
            erased_at timestamptz NOT NULL DEFAULT now(),
            counts jsonb NOT NULL DEFAULT '{}',
            CONSTRAINT ck_erasure_receipts_subject_kind
                CHECK (subject_kind IN ('session', 'agent'))
        )
        """
    )
    op.execute("CREATE INDEX ix_erasure_receipts_subject_id ON erasure_receipts (subject_id)")
    op.execute(
        """
        CREATE TABLE retention_policies (
            agent_id varchar(200) PRIMARY KEY,
            archive_after interval,
            erase_after interval,
            updated_by text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_retention_policies_archive_after
                CHECK (archive_after IS NULL OR archive_after >= interval '0'),
            CONSTRAINT ck_retention_policies_erase_after
                CHECK (erase_after IS NULL OR erase_after >= interval '0')
        )
        """
    )
    # No policy and no grant: the agent role sees neither table.
    for table in ("erasure_receipts", "retention_policies"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS retention_policies, erasure_receipts")
    op.execute(
        "DROP FUNCTION IF EXISTS vigil_memory_text_candidates(tsquery, text[], timestamptz, "
        "timestamptz, boolean, integer)"
    )
    op.execute("DROP FUNCTION IF EXISTS vigil_search_messages(tsquery, text, integer, integer)")
    op.execute("DROP TRIGGER IF EXISTS same_agent_supersede ON memories")
    op.execute("DROP FUNCTION IF EXISTS vigil_memories_same_agent()")
    for table in RECORD:
        op.execute(f"DROP TRIGGER IF EXISTS append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS vigil_record_append_only()")
    for privileges, table in COLUMN_GRANTS:
        op.execute(f"REVOKE {privileges} ON {table} FROM {ROLE}")
    op.execute(f"GRANT INSERT, UPDATE ON {', '.join(TABLES)} TO {ROLE}")
    op.execute("DROP POLICY IF EXISTS agent_isolation ON artifact_links")
    op.execute(
        f"CREATE POLICY agent_isolation ON artifact_links FOR ALL TO {ROLE} "
        f"USING (agent_id = {AGENT}) WITH CHECK (agent_id = {AGENT} "
        "AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = artifact_links.session_id))"
    )
    op.execute("DROP POLICY IF EXISTS agent_holders ON artifacts")
    op.execute(
        f"CREATE POLICY agent_links ON artifacts FOR SELECT TO {ROLE} USING "
        "(EXISTS (SELECT 1 FROM artifact_links l WHERE l.sha256 = artifacts.sha256))"
    )
    op.execute(f"CREATE POLICY agent_insert ON artifacts FOR INSERT TO {ROLE} WITH CHECK (true)")
    op.execute("DROP TABLE IF EXISTS artifact_holders")
