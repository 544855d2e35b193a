"""A human action at its own time: ``vigil_action_at`` and human_actions_view's ``at``.

The workflow queues a person's actions (an approval's decision, a message, a pause ...)
and writes them with the session's next record, so an event's ``created_at`` is when it was
written, not when it was done; the time it was done is in its payload's ``at``.

- ``vigil_action_at(payload, written)``: the payload's ``at`` when it holds a timestamp,
  else ``written``. Readers order events by it (exports; follow does the same in Python).
- ``human_actions_view.at`` is the action's own time (``ORDER BY at`` is the order things
  were done); the new last column ``recorded_at`` is when the row was written.
- ``tool_calls_view.decided_at`` is the decision's own time too.

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

OLD_TOOL_CALLS = """
        WITH calls AS (
            SELECT e.id, e.session_id, e.agent_id, e.step,
                   split_part(e.key, ':', 3)::int AS call_index,
                   'a' || e.step || '-' || split_part(e.key, ':', 3) AS approval_id,
                   e.payload, e.created_at
              FROM events e
             WHERE e.kind = 'tool_call' AND e.key LIKE 'tool:%'
        ), requests AS (
            SELECT e.session_id, e.agent_id, e.step, e.payload ->> 'approval_id' AS approval_id,
                   e.payload, e.created_at
              FROM events e WHERE e.kind = 'approval_requested'
        ), decisions AS (
            SELECT e.session_id, e.payload ->> 'approval_id' AS approval_id, e.actor, e.reason,
                   e.payload, e.created_at
              FROM events e WHERE e.kind = 'approval_decided'
        )
        SELECT COALESCE(c.session_id, r.session_id) AS session_id,
               COALESCE(c.agent_id, r.agent_id) AS agent_id,
               COALESCE(c.step, r.step) AS step,
               COALESCE(c.call_index, split_part(r.approval_id, '-', 2)::int) AS call_index,
               COALESCE(c.payload ->> 'tool', r.payload ->> 'tool') AS tool,
               c.payload ->> 'call_id' AS call_id,
               c.payload -> 'arguments' AS arguments,
               COALESCE((c.payload ->> 'edited')::boolean, false) AS arguments_edited,
               (c.payload ->> 'ok')::boolean AS ok,
               COALESCE((c.payload ->> 'rejected')::boolean, false) AS rejected,
               c.payload ->> 'output_preview' AS output_preview,
               c.payload ->> 'artifact_sha256' AS output_sha256,
               (c.payload ->> 'duration_ms')::double precision AS duration_ms,
               c.created_at AS called_at,
               r.approval_id IS NOT NULL AS needed_approval,
               r.approval_id,
               r.created_at AS approval_requested_at,
               r.payload ->> 'arguments' AS requested_arguments,
               d.payload ->> 'decision' AS decision,
               d.actor AS decided_by,
               d.reason AS decision_note,
               d.created_at AS decided_at,
               d.payload -> 'edited_arguments' AS edited_arguments
          FROM calls c
          FULL JOIN requests r
            ON r.session_id = c.session_id AND r.approval_id = c.approval_id
          LEFT JOIN decisions d
            ON d.session_id = r.session_id AND d.approval_id = r.approval_id
"""

TOOL_CALLS = OLD_TOOL_CALLS.replace(
    "d.created_at AS decided_at", "vigil_action_at(d.payload, d.created_at) AS decided_at"
)

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
    _replace_tool_calls(TOOL_CALLS, "when they decided (written later, with the next step)")


def _replace_tool_calls(query: str, decided_at: str) -> None:
    # Same columns, same types: the view's grants and other comments stay.
    op.execute(f"CREATE OR REPLACE VIEW tool_calls_view WITH (security_invoker = true) AS {query}")
    op.execute(f"COMMENT ON COLUMN tool_calls_view.decided_at IS {_quote(decided_at)}")


def downgrade() -> None:
    _replace_tool_calls(OLD_TOOL_CALLS, "when they decided")
    old = {k: v for k, v in COLUMNS.items() if k != "recorded_at"}
    old["at"] = "when it was recorded"
    _create(OLD_VIEW, OLD_ABOUT, old)
    op.execute("DROP FUNCTION IF EXISTS vigil_action_at(jsonb, timestamptz)")
