"""The event of an artifact uploaded through the API is named in the style of the others.

The API's upload recorded its event as ``artifact.uploaded``, the one kind written after
migration 20261130_10 renamed the names that broke the style; it now writes
``artifact_uploaded``. Rows written under the old name stay as they are (rewriting them
would read the whole events table): ``vigil_event_kind`` maps it, as it maps the names
renamed before, so the views and a filter on the kind find both.

Revision ID: 20261205_23
Revises: 20261205_22
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "20261205_23"
down_revision = "20261205_22"
branch_labels = None
depends_on = None

RENAMED = {
    "pause": "session_paused",
    "resume": "session_resumed",
    "redirect": "session_redirected",
    "wake": "session_woken",
    "rejected_input": "input_rejected",
    "artifact.replaced": "artifact_replaced",
}
"""The names migration 20261130_10 mapped."""

UPLOADED = {"artifact.uploaded": "artifact_uploaded"}


def _function(pairs: dict[str, str]) -> str:
    cases = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in pairs.items())
    return (
        "CREATE OR REPLACE FUNCTION vigil_event_kind(kind text) RETURNS text LANGUAGE sql "
        f"IMMUTABLE PARALLEL SAFE AS $$ SELECT CASE kind {cases} ELSE kind END $$"
    )


def upgrade() -> None:
    op.execute(_function({**RENAMED, **UPLOADED}))


def downgrade() -> None:
    op.execute(_function(RENAMED))
