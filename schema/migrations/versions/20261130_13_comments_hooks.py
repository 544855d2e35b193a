"""Comments on the tables and columns added for triggers, webhooks and forgotten
memories, so every table and column of the record says what it holds.

Revision ID: 20261130_13
Revises: 20261130_12
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_13"
down_revision = "20261130_12"
branch_labels = None
depends_on = None

TABLES = {
    "triggers": "Named inbound HTTP triggers: what a signed POST starts, messages or wakes",
    "trigger_deliveries": "Each delivery a trigger received, once per delivery id, with "
    "the answer it got (a repeated delivery gets the same answer)",
    "webhooks": "Webhooks added with the CLI (agent files name theirs in the agent version)",
    "webhook_deliveries": "Every attempt to deliver a webhook event, with its outcome",
}

COLUMNS = {
    "triggers": {
        "name": "The trigger's name, the last part of POST /v1/triggers/NAME",
        "agent_id": "The agent whose sessions it starts or reaches",
        "action": "start, message or wake",
        "goal_template": "Template of the goal, {field.path} filled from the JSON body",
        "message_template": "Template of the message sent to the session",
        "key_field": "Body field whose value names the one session for that key",
        "secret_nonce": "AES-GCM nonce of the signing secret",
        "secret_ciphertext": "The signing secret, AES-GCM encrypted (never stored plain)",
        "secret_key_id": "Id of the credential key that encrypted the secret",
        "created_by": "Who created the trigger",
        "created_at": "When it was created",
        "rotated_at": "When its secret was last replaced",
    },
    "trigger_deliveries": {
        "id": "Row id",
        "trigger_name": "The trigger that received it",
        "delivery_id": "The sender's X-Vigil-Delivery id (or the signed request's digest)",
        "body_sha256": "SHA-256 of the signed request",
        "state": "pending while it is acted on, done once answered",
        "status_code": "The HTTP status it was answered with",
        "result": "The JSON answer, replayed for a repeated delivery",
        "received_at": "When it arrived",
        "done_at": "When it was answered",
    },
    "webhooks": {
        "id": "Row id, named in vigil webhook remove",
        "agent_id": "The agent whose events it receives",
        "url": "Where events are POSTed",
        "events": "approval_requested, human_asked and/or session_ended",
        "secret_ref": "The signing secret: env:VAR or a credential name (never a value)",
        "created_at": "When it was added",
    },
    "webhook_deliveries": {
        "id": "Row id",
        "delivery_id": "The event's delivery id, the same on every attempt",
        "webhook": "Which webhook: the agent file's index or the webhooks row id",
        "agent_id": "The agent of the session",
        "session_id": "The session the event is about",
        "event": "approval_requested, human_asked or session_ended",
        "url": "Where it was sent",
        "attempt": "1 for the first attempt, then 2, 3...",
        "outcome": "delivered, failed (retried) or rejected (a 4xx: not retried)",
        "status_code": "The receiver's HTTP status, when it answered",
        "error": "What went wrong, when it did",
        "at": "When the attempt ended",
    },
    "memories": {
        "forgotten_at": "When a person forgot the memory (kept, never recalled again)",
        "forgotten_by": "Who forgot it",
        "forget_reason": "Why it was forgotten",
    },
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    for table, about in TABLES.items():
        op.execute(f"COMMENT ON TABLE {table} IS {_quote(about)}")
    for table, columns in COLUMNS.items():
        for column, about in columns.items():
            op.execute(f"COMMENT ON COLUMN {table}.{column} IS {_quote(about)}")


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        for column in columns:
            op.execute(f"COMMENT ON COLUMN {table}.{column} IS NULL")
    for table in TABLES:
        if table != "triggers":
            op.execute(f"COMMENT ON TABLE {table} IS NULL")
