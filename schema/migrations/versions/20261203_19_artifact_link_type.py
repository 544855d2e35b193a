"""An artifact's media type belongs to its link: ``artifact_links.mime_type``.

Artifacts are stored by content, so two uploads of the same bytes share one ``artifacts``
row, and its ``mime_type`` is the first upload's: the same bytes uploaded under another
name with another type, or a name written again with a new type, were answered with the
new type while every read served the first. The type a session gave a name is now kept
on that name's link, written on every upload and write; a link from before this column
(NULL) still reads its content's type.

``vigil_context_read`` reads the artifacts the model is shown: its artifact query is
rewritten in place (the function's own text, one expression changed) to read the link's
type first, as the Python reads do.

Revision ID: 20261203_19
Revises: 20261202_18
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261203_19"
down_revision = "20261202_18"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
CONTEXT_READ = (
    "vigil_context_read(text, integer, text[], text, integer, integer[], integer, boolean, "
    "bigint[], integer)"
)
CONTENT_TYPE = "SELECT l.session_id, l.name, a.sha256, a.size, a.mime_type,"
LINK_TYPE = (
    "SELECT l.session_id, l.name, a.sha256, a.size, "
    "coalesce(l.mime_type, a.mime_type) AS mime_type,"
)


def _rewrite_context_read(old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in the function's definition (exactly once)."""
    bind = op.get_bind()
    body = str(
        bind.execute(
            text(f"SELECT pg_get_functiondef('{CONTEXT_READ}'::regprocedure)")
        ).scalar_one()
    )
    if body.count(old) != 1:
        raise RuntimeError(f"vigil_context_read: expected {old!r} once in its definition")
    op.execute(body.replace(old, new))


def upgrade() -> None:
    op.execute("ALTER TABLE artifact_links ADD COLUMN mime_type text")
    op.execute(
        "COMMENT ON COLUMN artifact_links.mime_type IS "
        "'media type the session gave this name (NULL: the content''s, artifacts.mime_type)'"
    )
    op.execute(f"GRANT INSERT (mime_type), UPDATE (mime_type) ON artifact_links TO {ROLE}")
    _rewrite_context_read(CONTENT_TYPE, LINK_TYPE)


def downgrade() -> None:
    _rewrite_context_read(LINK_TYPE, CONTENT_TYPE)
    op.execute(f"REVOKE INSERT (mime_type), UPDATE (mime_type) ON artifact_links FROM {ROLE}")
    op.execute("ALTER TABLE artifact_links DROP COLUMN mime_type")
