"""Session record v1: agents, sessions, messages, events, artifacts, memories, pgvector.

Revision ID: 20261121_01
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "20261121_01"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # asyncpg prepares each statement, so the script runs one statement at a time.
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


SCHEMA = """
        CREATE TABLE agents (
            id varchar(200) PRIMARY KEY,
            name text NOT NULL,
            config jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE sessions (
            id varchar(200) PRIMARY KEY,
            agent_id varchar(200) NOT NULL REFERENCES agents(id),
            goal text NOT NULL,
            status varchar(32) NOT NULL,
            step integer NOT NULL DEFAULT 0,
            run_count integer NOT NULL DEFAULT 1,
            schedule_id varchar(200),
            tokens_in bigint NOT NULL DEFAULT 0,
            tokens_out bigint NOT NULL DEFAULT 0,
            cost_usd numeric(14, 6) NOT NULL DEFAULT 0,
            summary text,
            archive_uri text,
            metadata jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        );
        CREATE INDEX ix_sessions_agent_id ON sessions (agent_id);
        CREATE INDEX ix_sessions_status ON sessions (status);
        CREATE INDEX ix_sessions_schedule_id ON sessions (schedule_id);

        CREATE TABLE messages (
            id bigserial PRIMARY KEY,
            session_id varchar(200) NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            agent_id varchar(200) NOT NULL,
            seq integer NOT NULL,
            role varchar(32) NOT NULL,
            content text NOT NULL DEFAULT '',
            content_enc smallint NOT NULL DEFAULT 0,
            name text,
            tool_calls jsonb,
            tool_call_id text,
            step integer NOT NULL DEFAULT 0,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_messages_session_id_seq UNIQUE (session_id, seq)
        );
        CREATE INDEX ix_messages_agent_id ON messages (agent_id);
        CREATE INDEX ix_messages_tsv ON messages USING gin (tsv);

        CREATE TABLE events (
            id bigserial PRIMARY KEY,
            session_id varchar(200) NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            agent_id varchar(200) NOT NULL,
            key text NOT NULL,
            kind varchar(64) NOT NULL,
            step integer NOT NULL DEFAULT 0,
            actor text,
            reason text,
            payload jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_events_session_id_key UNIQUE (session_id, key)
        );
        CREATE INDEX ix_events_agent_id ON events (agent_id);
        CREATE INDEX ix_events_kind ON events (kind);

        CREATE TABLE artifacts (
            sha256 varchar(64) PRIMARY KEY,
            size bigint NOT NULL,
            mime_type text NOT NULL DEFAULT 'application/octet-stream',
            storage_uri text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE artifact_links (
            id bigserial PRIMARY KEY,
            agent_id varchar(200) NOT NULL,
            session_id varchar(200) NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            name text NOT NULL,
            sha256 varchar(64) NOT NULL REFERENCES artifacts(sha256),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_artifact_links_session_id_name UNIQUE (session_id, name)
        );
        CREATE INDEX ix_artifact_links_agent_id ON artifact_links (agent_id);

        CREATE TABLE memories (
            id bigserial PRIMARY KEY,
            agent_id varchar(200) NOT NULL,
            kind varchar(32) NOT NULL,
            subject text,
            content text NOT NULL,
            importance double precision NOT NULL DEFAULT 0.5,
            dim integer NOT NULL,
            embedding vector NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (
                to_tsvector('english', coalesce(subject, '') || ' ' || content)
            ) STORED,
            source_session_id varchar(200),
            superseded_by bigint REFERENCES memories(id),
            superseded_at timestamptz,
            metadata jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT ck_memories_dim CHECK (vector_dims(embedding) = dim)
        );
        CREATE INDEX ix_memories_agent_id ON memories (agent_id);
        CREATE INDEX ix_memories_tsv ON memories USING gin (tsv);
        -- One HNSW index per supported dimension (the embedding column itself has none).
        CREATE INDEX ix_memories_embedding_384 ON memories
            USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dim = 384;
"""


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS memories, artifact_links, artifacts, events, messages, "
        "sessions, agents CASCADE"
    )
