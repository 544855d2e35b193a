"""Memories say which embedder made their vector; an agent's memories can be re-embedded.

- ``memories.embedder`` and ``memories.embedder_version`` (beside ``dim``) record the
  embedder that produced each vector. Existing rows take the embedder name the store
  always wrote into their metadata, version ``1``.
- ``memory_embedders``: per agent, the embedder its recall compares with (``active``,
  at most one), one being built by ``vigil memory reindex`` (``building``, with its
  progress) and earlier ones (``retired``). Backfilled with each agent's newest memory's
  embedder as the active one.
- ``memory_vectors``: vectors of a reindex in progress, one per (memory, embedder,
  version), written beside the live ones. The switch copies them into ``memories`` in one
  transaction and removes them.

Revision ID: 20261130_15
Revises: 20261130_14
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_15"
down_revision = "20261130_14"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
AGENT = "current_setting('vigil.agent_id', true)"

TABLES = {
    "memory_embedders": "Per agent, the embedder its memory vectors come from (active), "
    "one being built by vigil memory reindex (building, with progress) and earlier ones "
    "(retired)",
    "memory_vectors": "Vectors of a reindex in progress, written beside the live ones "
    "until the switch copies them into memories",
}

COLUMNS = {
    "memories": {
        "embedder": "Name of the embedder that produced the embedding (e.g. hashing-384)",
        "embedder_version": "Version of that embedder; a new version is a new vector space",
    },
    "memory_embedders": {
        "agent_id": "The agent (memory namespace)",
        "embedder": "Embedder name",
        "version": "Embedder version",
        "dim": "Dimensions of its vectors",
        "state": "active (recall uses it), building (a reindex in progress) or retired",
        "total": "Memories to re-embed, counted when the reindex (re)started",
        "done": "Memories re-embedded so far",
        "started_at": "When the reindex to this embedder started",
        "updated_at": "When its progress last moved",
        "activated_at": "When recall switched to it",
    },
    "memory_vectors": {
        "memory_id": "The memory re-embedded",
        "agent_id": "The memory's agent",
        "embedder": "Embedder name of the new vector",
        "version": "Embedder version of the new vector",
        "dim": "Dimensions of the new vector",
        "embedding": "The new vector, unit length",
        "created_at": "When it was written",
    },
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    # asyncpg prepares each statement: one statement per op.execute.
    op.execute("ALTER TABLE memories ADD COLUMN embedder text, ADD COLUMN embedder_version text")
    op.execute(
        "UPDATE memories SET embedder = coalesce(nullif(metadata->>'embedder', ''), "
        "'unknown-' || dim), embedder_version = '1'"
    )
    op.execute(
        "ALTER TABLE memories ALTER COLUMN embedder SET NOT NULL, "
        "ALTER COLUMN embedder_version SET NOT NULL"
    )
    # A row written without the store (COPY by a benchmark, a hand-written INSERT) names
    # no embedder: it takes the agent's active one when the dimension fits, otherwise an
    # ``unknown-<dim>`` that no recall compares with. Invoker's rights: acting for an
    # agent, the look-up sees only that agent's row.
    op.execute(
        """
        CREATE FUNCTION vigil_memories_embedder() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.embedder IS NULL THEN
                SELECT e.embedder, e.version INTO NEW.embedder, NEW.embedder_version
                FROM memory_embedders e
                WHERE e.agent_id = NEW.agent_id AND e.state = 'active' AND e.dim = NEW.dim;
                IF NEW.embedder IS NULL THEN
                    NEW.embedder := 'unknown-' || NEW.dim;
                END IF;
            END IF;
            NEW.embedder_version := coalesce(NEW.embedder_version, '1');
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER embedder_of_row BEFORE INSERT ON memories FOR EACH ROW "
        "WHEN (NEW.embedder IS NULL OR NEW.embedder_version IS NULL) "
        "EXECUTE FUNCTION vigil_memories_embedder()"
    )
    op.execute(
        """
        CREATE TABLE memory_embedders (
            agent_id varchar(200) NOT NULL,
            embedder text NOT NULL,
            version text NOT NULL,
            dim integer NOT NULL,
            state varchar(16) NOT NULL,
            total integer NOT NULL DEFAULT 0,
            done integer NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            activated_at timestamptz,
            CONSTRAINT pk_memory_embedders PRIMARY KEY (agent_id, embedder, version),
            CONSTRAINT ck_memory_embedders_state
                CHECK (state IN ('active', 'building', 'retired'))
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_memory_embedders_active ON memory_embedders (agent_id) "
        "WHERE state = 'active'"
    )
    op.execute(
        """
        INSERT INTO memory_embedders (agent_id, embedder, version, dim, state, activated_at)
        SELECT DISTINCT ON (agent_id) agent_id, embedder, embedder_version, dim, 'active', now()
        FROM memories ORDER BY agent_id, id DESC
        """
    )
    op.execute(
        """
        CREATE TABLE memory_vectors (
            memory_id bigint NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
            agent_id varchar(200) NOT NULL,
            embedder text NOT NULL,
            version text NOT NULL,
            dim integer NOT NULL,
            embedding vector NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_memory_vectors PRIMARY KEY (memory_id, embedder, version)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_memory_vectors_agent ON memory_vectors (agent_id, embedder, version)"
    )
    for table in ("memory_embedders", "memory_vectors"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY agent_isolation ON {table} FOR ALL TO {ROLE} "
            f"USING (agent_id = {AGENT}) WITH CHECK (agent_id = {AGENT})"
        )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON memory_embedders TO {ROLE}")
    op.execute(f"GRANT SELECT, INSERT ON memory_vectors TO {ROLE}")
    op.execute(f"GRANT INSERT (embedder, embedder_version) ON memories TO {ROLE}")
    # The switch swaps the vector of the agent's own memories in place.
    op.execute(
        f"GRANT UPDATE (embedding, dim, embedder, embedder_version) ON memories TO {ROLE}"
    )
    for table, about in TABLES.items():
        op.execute(f"COMMENT ON TABLE {table} IS {_quote(about)}")
    for table, columns in COLUMNS.items():
        for column, about in columns.items():
            op.execute(f"COMMENT ON COLUMN {table}.{column} IS {_quote(about)}")


def downgrade() -> None:
    op.execute(
        f"REVOKE UPDATE (embedding, dim, embedder, embedder_version) ON memories FROM {ROLE}"
    )
    op.execute("DROP TRIGGER IF EXISTS embedder_of_row ON memories")
    op.execute("DROP FUNCTION IF EXISTS vigil_memories_embedder()")
    op.execute("DROP TABLE IF EXISTS memory_vectors")
    op.execute("DROP TABLE IF EXISTS memory_embedders")
    op.execute("ALTER TABLE memories DROP COLUMN embedder, DROP COLUMN embedder_version")
