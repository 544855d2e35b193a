"""Personal access tokens for the HTTP API.

A token is shown once when created (``vgl_<id>_<secret>``); the table keeps its id and the
SHA-256 of the secret, never the secret. Scopes are ``read``, ``control`` and ``admin``
(each includes the ones before it); ``agents`` limits a token to some agents (NULL: all).
The ``vigil_agent`` role has no grant and no policy on it: only the API's own system
connection reads it.

Revision ID: 20261130_07
Revises: 20261130_06
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_07"
down_revision = "20261130_06"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_tokens (
            id varchar(32) NOT NULL CONSTRAINT pk_api_tokens PRIMARY KEY,
            owner varchar(200) NOT NULL,
            name varchar(200) NOT NULL DEFAULT '',
            secret_sha256 bytea NOT NULL,
            scope varchar(16) NOT NULL
                CONSTRAINT ck_api_tokens_scope CHECK (scope IN ('read', 'control', 'admin')),
            agents text[],
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz,
            revoked_at timestamptz,
            last_used_at timestamptz
        )
        """
    )
    op.execute("ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY")
    op.execute(
        "COMMENT ON TABLE api_tokens IS "
        "'Personal access tokens of the HTTP API: id and SHA-256 of the secret, never the secret'"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_tokens")
