"""The live feed: NOTIFY on every new message, new event and session status change.

Each notification on channel ``vigil_feed`` is a small JSON object naming the row, never
its content: ``{"s": session id, "a": agent id, "k": kind, "o": ordering key}``, with
``k`` one of ``message`` (``o``: messages.id), ``event`` (``o``: events.id) or
``status`` (no key: the listener reads the status back under row-level security). So a
payload stays far below PostgreSQL's 8000-byte cap, and a listener learns nothing that
the policies would hide from it beyond which session moved. Notifications are sent at
commit, in commit order; an insert that ``ON CONFLICT DO NOTHING`` skipped (a retried
write) sends nothing, so a retry never announces a row twice.

Revision ID: 20261130_08
Revises: 20261130_07
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_08"
down_revision = "20261130_07"
branch_labels = None
depends_on = None

CHANNEL = "vigil_feed"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION vigil_feed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_TABLE_NAME = 'sessions' THEN
                PERFORM pg_notify('{CHANNEL}', json_build_object(
                    's', NEW.id, 'a', NEW.agent_id, 'k', 'status')::text);
            ELSIF TG_TABLE_NAME = 'messages' THEN
                PERFORM pg_notify('{CHANNEL}', json_build_object(
                    's', NEW.session_id, 'a', NEW.agent_id, 'k', 'message', 'o', NEW.id)::text);
            ELSE
                PERFORM pg_notify('{CHANNEL}', json_build_object(
                    's', NEW.session_id, 'a', NEW.agent_id, 'k', 'event', 'o', NEW.id)::text);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table in ("messages", "events"):
        op.execute(
            f"CREATE TRIGGER feed_notify AFTER INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION vigil_feed_notify()"
        )
    op.execute(
        "CREATE TRIGGER feed_notify_opened AFTER INSERT ON sessions "
        "FOR EACH ROW EXECUTE FUNCTION vigil_feed_notify()"
    )
    op.execute(
        "CREATE TRIGGER feed_notify_status AFTER UPDATE OF status ON sessions "
        "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
        "EXECUTE FUNCTION vigil_feed_notify()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS feed_notify_status ON sessions")
    op.execute("DROP TRIGGER IF EXISTS feed_notify_opened ON sessions")
    for table in ("messages", "events"):
        op.execute(f"DROP TRIGGER IF EXISTS feed_notify ON {table}")
    op.execute("DROP FUNCTION IF EXISTS vigil_feed_notify()")
