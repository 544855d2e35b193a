"""A human action at its own time: ``vigil_action_at`` and human_actions_view's ``at``.

The workflow queues a person's actions (an approval's decision, a message, a pause ...)
and writes them with the session's next record, so an event's ``created_at`` is when it was
written, not when it was done; the time it was done is in its payload's ``at``.

- ``vigil_action_at(payload, written)``: the payload's ``at`` when it holds a timestamp,
  else ``written``. Readers order events by it (exports; follow does the same in Python).
- ``human_actions_view.at`` is the action's own time (``ORDER BY at`` is the order things
  were done); the new last column ``recorded_at`` is when the row was written.

Revision ID: 20261201_16
Revises: 20261130_15
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "20261201_16"
down_revision = "20261130_15"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"

# An ISO 8601 timestamp with its offset, as workflow.now().isoformat() writes it; anything
# else (absent, another shape) leaves the write time.
_STAMP = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:?\d{2})?)$"

ACTION_AT = (
    "CREATE FUNCTION vigil_action_at(payload jsonb, written timestamptz) RETURNS timestamptz "
    "LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT CASE "
    "WHEN jsonb_typeof(payload -> 'at') = 'string' "
    f"AND (payload ->> 'at') ~ '{_STAMP}' THEN (payload ->> 'at')::timestamptz "
    "ELSE written END $$"
)

VIEW = """
    SELECT e.session_id, e.agent_id, e.step, vigil_event_kind(e.kind) AS kind,
           e.actor, e.reason, e.payload AS details,
           vigil_action_at(e.payload, e.created_at) AS at, e.created_at AS recorded_at
      FROM events e WHERE e.actor IS NOT NULL
"""

OLD_VIEW = """
    SELECT e.session_id, e.agent_id, e.step, vigil_event_kind(e.kind) AS kind,
           e.actor, e.reason, e.payload AS details, e.created_at AS at
      FROM events e WHERE e.actor IS NOT NULL
"""

ABOUT = (
    "Everything a person did to a session: approvals, pauses, messages, redirects, wakes, "
    "with who, when and why; ORDER BY at is the order they were done"
)
OLD_ABOUT = (
    "Everything a person did to a session: approvals, pauses, messages, redirects, wakes, "
    "with who, when and why"
)

COLUMNS = {
    "session_id": "the session",
    "agent_id": "the agent",
    "step": "the session's step at the time",
    "kind": "what they did (approval_decided, session_paused, human_message, ...)",
    "actor": "who did it",
    "reason": "why, as they said (note, reason)",
    "details": "the rest of what was recorded (JSON)",
    "at": "when they did it (the action's own time; recorded_at when it has none)",
    "recorded_at": "when the row was written (a queued action is written with the next step)",
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _create(query: str, about: str, columns: dict[str, str]) -> None:
    op.execute("DROP VIEW IF EXISTS human_actions_view")
    op.execute(f"CREATE VIEW human_actions_view WITH (security_invoker = true) AS {query}")
    op.execute(f"GRANT SELECT ON human_actions_view TO {ROLE}")
    op.execute(f"COMMENT ON VIEW human_actions_view IS {_quote(about)}")
    for column, text in columns.items():
        op.execute(f"COMMENT ON COLUMN human_actions_view.{column} IS {_quote(text)}")


def upgrade() -> None:
    op.execute(ACTION_AT)
    op.execute(f"GRANT EXECUTE ON FUNCTION vigil_action_at(jsonb, timestamptz) TO {ROLE}")
    op.execute(
        "COMMENT ON FUNCTION vigil_action_at(jsonb, timestamptz) IS "
        "'When an event''s action was done: its payload''s at, else the write time'"
    )
    _create(VIEW, ABOUT, COLUMNS)


def downgrade() -> None:
    old = {k: v for k, v in COLUMNS.items() if k != "recorded_at"}
    old["at"] = "when it was recorded"
    _create(OLD_VIEW, OLD_ABOUT, old)
    op.execute("DROP FUNCTION IF EXISTS vigil_action_at(jsonb, timestamptz)")
