"""Inbound triggers and outbound webhooks.

- ``triggers``: a named trigger (agent, action, templates, key field) and its secret,
  sealed with AES-GCM by the credentials machinery (``activities.credentials``): only the
  API, holding the key, opens it to check a signature.
- ``trigger_deliveries``: one row per accepted delivery id of a trigger, with the result
  it gave, so the same delivery sent twice gets the same answer and acts once.
- ``webhooks``: webhooks added with ``vigil webhook add`` (those of an agent file live
  in its version's spec). The secret is a credential reference, never a value.
- ``webhook_deliveries``: every attempt to deliver an event to a webhook, and its outcome.

System tables: the ``vigil_agent`` role has no grant and no policy on them.

Revision ID: 20261130_09
Revises: 20261130_08
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_09"
down_revision = "20261130_08"
branch_labels = None
depends_on = None

TABLES = ("triggers", "trigger_deliveries", "webhooks", "webhook_deliveries")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE triggers (
            name varchar(100) NOT NULL CONSTRAINT pk_triggers PRIMARY KEY,
            agent_id varchar(200) NOT NULL,
            action varchar(16) NOT NULL
                CONSTRAINT ck_triggers_action CHECK (action IN ('start', 'message', 'wake')),
            goal_template text,
            message_template text,
            key_field varchar(200),
            secret_nonce bytea NOT NULL,
            secret_ciphertext bytea NOT NULL,
            secret_key_id varchar(32) NOT NULL,
            created_by varchar(200) NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            rotated_at timestamptz
        )
        """
    )
    op.execute(
        """
        CREATE TABLE trigger_deliveries (
            id bigserial CONSTRAINT pk_trigger_deliveries PRIMARY KEY,
            trigger_name varchar(100) NOT NULL
                CONSTRAINT fk_trigger_deliveries_trigger_name_triggers
                REFERENCES triggers (name) ON DELETE CASCADE,
            delivery_id varchar(200) NOT NULL,
            body_sha256 varchar(64) NOT NULL,
            state varchar(16) NOT NULL DEFAULT 'pending'
                CONSTRAINT ck_trigger_deliveries_state CHECK (state IN ('pending', 'done')),
            status_code integer,
            result jsonb,
            received_at timestamptz NOT NULL DEFAULT now(),
            done_at timestamptz,
            CONSTRAINT uq_trigger_deliveries_trigger_name UNIQUE (trigger_name, delivery_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_trigger_deliveries_body ON trigger_deliveries (trigger_name, body_sha256)"
    )
    op.execute(
        """
        CREATE TABLE webhooks (
            id bigserial CONSTRAINT pk_webhooks PRIMARY KEY,
            agent_id varchar(200) NOT NULL,
            url text NOT NULL,
            events text[] NOT NULL,
            secret_ref varchar(300) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_webhooks_agent_id ON webhooks (agent_id)")
    op.execute(
        """
        CREATE TABLE webhook_deliveries (
            id bigserial CONSTRAINT pk_webhook_deliveries PRIMARY KEY,
            delivery_id varchar(400) NOT NULL,
            webhook varchar(100) NOT NULL,
            agent_id varchar(200) NOT NULL,
            session_id varchar(400) NOT NULL,
            event varchar(40) NOT NULL,
            url text NOT NULL,
            attempt integer NOT NULL,
            outcome varchar(16) NOT NULL
                CONSTRAINT ck_webhook_deliveries_outcome
                CHECK (outcome IN ('delivered', 'failed', 'rejected')),
            status_code integer,
            error text,
            at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_webhook_deliveries_delivery_id UNIQUE (delivery_id, webhook, attempt)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_webhook_deliveries_agent ON webhook_deliveries (agent_id, session_id, id)"
    )
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(
        "COMMENT ON TABLE triggers IS "
        "'Inbound HTTP triggers: the secret sealed with AES-GCM, never in plain'"
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}")
