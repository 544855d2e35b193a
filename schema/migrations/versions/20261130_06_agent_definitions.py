"""Agent definitions (immutable versions), the version a session runs, encrypted credentials.

``agent_versions`` holds one row per version of an agent's definition: the validated spec
as canonical JSON, its content hash and the tool catalog. A trigger refuses UPDATE and
DELETE, so a version is what it was when applied, and a session pinned to it never
changes under it. Row-level security lets the ``vigil_agent`` role read its own agent's
versions only.

``credentials`` holds named secrets encrypted with AES-GCM (key from settings, never
stored here). The ``vigil_agent`` role has no grant and no policy on it: only system work
(the worker resolving a model connection's credential) reads it.

Revision ID: 20261130_06
Revises: 20261121_03
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_06"
down_revision = "20261130_05"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
AGENT = "current_setting('vigil.agent_id', true)"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE agent_versions (
            agent_id varchar(200) NOT NULL
                CONSTRAINT fk_agent_versions_agent_id_agents REFERENCES agents (id),
            version integer NOT NULL CONSTRAINT ck_agent_versions_version CHECK (version >= 1),
            content_hash varchar(64) NOT NULL,
            spec jsonb NOT NULL,
            tools jsonb NOT NULL DEFAULT '[]'::jsonb,
            source text,
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_agent_versions PRIMARY KEY (agent_id, version)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION vigil_agent_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Erasure of an agent (declared record maintenance) may remove its versions.
            IF TG_OP = 'DELETE'
               AND current_setting('vigil.record_maintenance', true) = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'vigil: rows of % are immutable', TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER agent_versions_immutable BEFORE UPDATE OR DELETE ON agent_versions "
        "FOR EACH ROW EXECUTE FUNCTION vigil_agent_versions_immutable()"
    )
    op.execute("ALTER TABLE agent_versions ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY agent_isolation ON agent_versions FOR SELECT TO {ROLE} "
        f"USING (agent_id = {AGENT})"
    )
    op.execute(f"GRANT SELECT ON agent_versions TO {ROLE}")

    op.execute("ALTER TABLE sessions ADD COLUMN agent_version integer")

    op.execute(
        """
        CREATE TABLE credentials (
            name varchar(200) NOT NULL CONSTRAINT pk_credentials PRIMARY KEY,
            nonce bytea NOT NULL,
            ciphertext bytea NOT NULL,
            key_id varchar(16) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("ALTER TABLE credentials ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS credentials")
    op.execute("ALTER TABLE sessions DROP COLUMN IF EXISTS agent_version")
    op.execute("DROP TABLE IF EXISTS agent_versions")
    op.execute("DROP FUNCTION IF EXISTS vigil_agent_versions_immutable()")
