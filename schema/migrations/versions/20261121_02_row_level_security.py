"""Row-level security: agents are isolated from each other by agent_id.

A NOLOGIN role ``vigil_agent`` holds the privileges an agent's own work needs (no DELETE,
no TRUNCATE). The application connects as the owner of the tables for system work and,
for an agent's work, switches role inside a transaction (``activities.record.rls``):

    SET LOCAL ROLE vigil_agent;
    SELECT set_config('vigil.agent_id', '<agent id>', true);

Every policy compares ``agent_id`` with that setting, so a connection acting for agent A
reads and writes none of agent B's rows whatever the query. Child rows (messages, events,
artifact links) must also hang off a session the agent can see, so A cannot slip a row
into B's session. Artifact rows carry no agent: one is visible to an agent only through
one of its own links, and content-addressed rows are never updated.

Roles are cluster-wide: the role is created once, guarded, and shared by every database
of the cluster. On a user's own server the migrating user need not be a superuser: it
needs CREATEROLE the first time (PostgreSQL 16 then grants it ADMIN on the new role),
and the migration grants the role to the migrating user so ``SET ROLE`` works.

Revision ID: 20261121_02
Revises: 20261121_01
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "20261121_02"
down_revision = "20261121_01"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
AGENT = "current_setting('vigil.agent_id', true)"
TABLES = ("agents", "sessions", "messages", "events", "artifacts", "artifact_links", "memories")
SEQUENCES = ("messages_id_seq", "events_id_seq", "artifact_links_id_seq", "memories_id_seq")
# Tables whose rows carry agent_id directly, and those that also belong to a session.
OWNED = ("sessions", "memories")
IN_SESSION = ("messages", "events", "artifact_links")


def upgrade() -> None:
    # asyncpg prepares each statement: one statement per op.execute.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
            END IF;
        END
        $$
        """
    )
    # The migrating user must be able to SET ROLE vigil_agent. A superuser always can;
    # an owner that created the role has ADMIN on it (not SET, on PostgreSQL 16), so it
    # grants the role to itself here. pg_has_role's 'SET' check exists from 16 on.
    op.execute(
        f"""
        DO $$
        DECLARE
            how text := CASE WHEN current_setting('server_version_num')::int >= 160000
                             THEN 'SET' ELSE 'MEMBER' END;
        BEGIN
            IF NOT pg_has_role(current_user, '{ROLE}', how) THEN
                BEGIN
                    EXECUTE format('GRANT {ROLE} TO %I', current_user);
                EXCEPTION WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'vigil: % cannot be granted role {ROLE}', current_user
                        USING HINT = format(
                            'Ask an administrator to run: GRANT {ROLE} TO %I;', current_user);
                END;
            END IF;
        END
        $$
        """
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {', '.join(TABLES)} TO {ROLE}")
    op.execute(f"GRANT USAGE ON SEQUENCE {', '.join(SEQUENCES)} TO {ROLE}")
    # Lets the artifacts policy (and the sweeper) find an artifact's links without a scan.
    op.execute("CREATE INDEX ix_artifact_links_sha256 ON artifact_links (sha256)")

    for table in (*OWNED, *IN_SESSION, "agents", "artifacts"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")

    for table in OWNED:
        op.execute(
            f"CREATE POLICY agent_isolation ON {table} FOR ALL TO {ROLE} "
            f"USING (agent_id = {AGENT}) WITH CHECK (agent_id = {AGENT})"
        )
    for table in IN_SESSION:
        # The sub-select runs under the sessions policy too: only the agent's sessions.
        op.execute(
            f"CREATE POLICY agent_isolation ON {table} FOR ALL TO {ROLE} "
            f"USING (agent_id = {AGENT}) WITH CHECK (agent_id = {AGENT} "
            f"AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = {table}.session_id))"
        )
    op.execute(
        f"CREATE POLICY agent_isolation ON agents FOR ALL TO {ROLE} "
        f"USING (id = {AGENT}) WITH CHECK (id = {AGENT})"
    )
    op.execute(
        f"CREATE POLICY agent_links ON artifacts FOR SELECT TO {ROLE} USING "
        "(EXISTS (SELECT 1 FROM artifact_links l WHERE l.sha256 = artifacts.sha256))"
    )
    # Any agent may add content-addressed bytes; there is no UPDATE policy, so rows stay
    # as written.
    op.execute(f"CREATE POLICY agent_insert ON artifacts FOR INSERT TO {ROLE} WITH CHECK (true)")


def downgrade() -> None:
    for table in (*OWNED, *IN_SESSION, "agents"):
        op.execute(f"DROP POLICY IF EXISTS agent_isolation ON {table}")
    op.execute("DROP POLICY IF EXISTS agent_links ON artifacts")
    op.execute("DROP POLICY IF EXISTS agent_insert ON artifacts")
    for table in (*OWNED, *IN_SESSION, "agents", "artifacts"):
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP INDEX IF EXISTS ix_artifact_links_sha256")
    op.execute(f"REVOKE ALL ON {', '.join(TABLES)} FROM {ROLE}")
    op.execute(f"REVOKE ALL ON SEQUENCE {', '.join(SEQUENCES)} FROM {ROLE}")
    # Other databases of the cluster may still use the role: then it stays.
    op.execute(
        f"""
        DO $$
        BEGIN
            DROP ROLE IF EXISTS {ROLE};
        EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN
            RAISE NOTICE 'role {ROLE} kept: still used elsewhere';
        END
        $$
        """
    )
