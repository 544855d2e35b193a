"""SQL a person can read: a comment on every table and column, one naming style for event
kinds, and views for the questions people ask.

- Event kinds: lower snake case, subject first (``session_paused``, ``input_rejected``);
  the six older names are renamed in place (as record maintenance: the record is
  append-only otherwise), and ``vigil_event_kind(kind)`` maps an old name to its name now,
  for rows a worker on older code may still write. ``schema/event_kinds.py`` holds the
  same table for Python.
- Views (``security_invoker``: row-level security applies to whoever queries them, so
  ``vigil_agent`` sees only its agent's rows): ``sessions_view``, ``tool_calls_view``,
  ``model_calls_view``, ``human_actions_view``.

Revision ID: 20261130_10
Revises: 20261130_09
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "20261130_10"
down_revision = "20261130_09"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"

# Old stored name -> name now (the same table as schema/event_kinds.py LEGACY, frozen here).
RENAMED = {
    "pause": "session_paused",
    "resume": "session_resumed",
    "redirect": "session_redirected",
    "wake": "session_woken",
    "rejected_input": "input_rejected",
    "artifact.replaced": "artifact_replaced",
}

TS = "when the row was written (server time)"

COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "alembic_version": (
        "The migration the database is at (Alembic); `vigil doctor` compares it with the code",
        {"version_num": "revision id of the newest migration applied"},
    ),
    "agents": (
        "One row per agent id; its definitions are the versions in agent_versions",
        {
            "id": "the agent id (sessions, memories and artifacts are isolated by it)",
            "name": "display name",
            "config": "settings of agents created before definitions existed (JSON)",
            "created_at": TS,
        },
    ),
    "agent_versions": (
        "Immutable versions of an agent's definition (`vigil agent apply`); a session pins one",
        {
            "agent_id": "the agent (agents.id)",
            "version": "1, 2, ... per agent; a new one for every changed definition",
            "content_hash": "sha256 of the normalised definition (unchanged file: no new version)",
            "spec": "the whole definition: model, prompt, budgets, policy, memory (JSON)",
            "tools": "the definition's tools with their approval rules (JSON array)",
            "source": "the file the definition was applied from",
            "created_by": "who applied it",
            "created_at": TS,
        },
    ),
    "api_tokens": (
        "Personal access tokens of the HTTP API: id and SHA-256 of the secret, never the secret",
        {
            "id": "public token id (the vgl_<id>_ part)",
            "owner": "who the token acts as (recorded as `by` of its actions)",
            "name": "a label given at creation",
            "secret_sha256": "SHA-256 of the secret part (the secret itself is never stored)",
            "scope": "read, control or admin (each includes the ones before it)",
            "agents": "agents the token may act on (NULL: all)",
            "created_at": TS,
            "expires_at": "when the token stops working (NULL: never)",
            "revoked_at": "when it was revoked (NULL: not revoked)",
            "last_used_at": "last request made with it",
        },
    ),
    "credentials": (
        "Named secrets of model connections, AES-GCM encrypted (the key is never stored here)",
        {
            "name": "the credential's name, as an agent's model connection refers to it",
            "nonce": "AES-GCM nonce",
            "ciphertext": "the encrypted secret",
            "key_id": "which credential key encrypted it (VIGIL_CREDENTIAL_KEY)",
            "created_at": TS,
            "updated_at": "when the secret was last replaced",
        },
    ),
    "sessions": (
        "One row per agent session; id is the Temporal workflow id. See sessions_view",
        {
            "id": "session id = Temporal workflow id",
            "agent_id": "the agent running it",
            "goal": "the current goal (a redirect replaces it; the old one is in events)",
            "status": "running, waiting_approval, paused, completed, failed, cancelled, "
            "budget_exhausted, timed_out",
            "step": "model steps taken so far",
            "run_count": "Temporal runs (continue-as-new starts a new run, same session)",
            "schedule_id": "the Temporal Schedule that started it (NULL: started by hand)",
            "agent_version": "the agent definition's version it runs (NULL: no definition)",
            "tokens_in": "model input tokens spent",
            "tokens_out": "model output tokens spent",
            "cost_usd": "model cost in USD (from the price table)",
            "summary": "the final summary the agent gave when it finished",
            "archive_uri": "object-store URI of the archive when archived",
            "metadata": "extra facts (archive digest, erasure marks) as JSON",
            "created_at": "when the session started",
            "updated_at": "last change of this row",
            "finished_at": "when it ended (NULL: not ended)",
        },
    ),
    "messages": (
        "The transcript, append-only; (session_id, seq) is unique (the idempotency key)",
        {
            "id": "row id, in insertion order",
            "session_id": "the session",
            "agent_id": "the session's agent (row-level security filters on it)",
            "seq": "position in the transcript, 0 first",
            "role": "user, assistant, tool or system",
            "content": "the text (as stored; see content_enc)",
            "content_enc": "0: stored as is; 1: escaped (held NUL or lone surrogates)",
            "name": "the tool's name (tool rows) or the human's (user rows)",
            "tool_calls": "tool calls the assistant asked for: [{id, name, arguments}]",
            "tool_call_id": "the call a tool row answers",
            "step": "the model step it belongs to",
            "tsv": "full-text vector of content (search)",
            "created_at": TS,
        },
    ),
    "events": (
        "Everything else that happened, append-only: model and tool calls, approvals, human "
        "actions; kind names are in schema/event_kinds.py. See the *_view views",
        {
            "id": "row id, in insertion order",
            "session_id": "the session",
            "agent_id": "the session's agent (row-level security filters on it)",
            "key": "idempotency key, unique per session (e.g. tool:3:0, approval:a3-0:decided)",
            "kind": "what happened: session_opened, model_call, tool_call, approval_requested, "
            "approval_decided, session_paused, ... (snake case, subject first)",
            "step": "the model step it happened at",
            "actor": "who did it, for human actions (NULL: the session itself)",
            "reason": "why, as the actor gave it (approval note, pause reason, ...)",
            "payload": "details of the kind (JSON)",
            "created_at": TS,
        },
    ),
    "artifacts": (
        "Bytes in the object store, content-addressed; the row follows the durable write",
        {
            "sha256": "content digest, the artifact's identity",
            "size": "bytes",
            "mime_type": "media type",
            "storage_uri": "where the bytes are (file:// or s3://)",
            "created_at": TS,
        },
    ),
    "artifact_holders": (
        "Agents whose work stored an artifact: they may link it and read its row",
        {
            "sha256": "the artifact",
            "agent_id": "an agent holding it",
            "created_at": TS,
        },
    ),
    "artifact_links": (
        "An artifact under a name in a session; (session_id, name) is unique",
        {
            "id": "row id",
            "agent_id": "the session's agent",
            "session_id": "the session",
            "name": "the name the session gave it",
            "sha256": "the artifact",
            "created_at": TS,
        },
    ),
    "memories": (
        "Long-term memory of an agent: facts, reflections, lessons; superseded, never deleted",
        {
            "id": "row id",
            "agent_id": "whose memory",
            "kind": "fact, reflection or lesson",
            "subject": "what it is about (a newer memory on the same subject supersedes it)",
            "subject_key": "lower(subject), for matching",
            "content": "the memory itself",
            "importance": "0..1, weighs recall",
            "dim": "dimension of the embedding",
            "embedding": "vector of the content (pgvector)",
            "tsv": "full-text vector of the content",
            "source_session_id": "the session it was learned in",
            "superseded_by": "the memory that replaced it (NULL: current)",
            "superseded_at": "when it was replaced",
            "metadata": "extra facts (JSON)",
            "created_at": TS,
        },
    ),
    "memory_writes": (
        "Results of keyed memory writes, so a retried write returns the first result",
        {
            "agent_id": "whose memory",
            "write_key": "idempotency key of the write",
            "session_id": "the session that wrote it",
            "memory_id": "the memory written or merged into",
            "action": "added, merged or superseded",
            "similarity": "similarity to the memory it merged with",
            "superseded_ids": "memories this write superseded",
            "created_at": TS,
        },
    ),
    "erasure_receipts": (
        "What an erasure removed, when and at whose request: all it leaves behind",
        {
            "id": "row id",
            "subject_kind": "session or agent",
            "subject_id": "the erased session's or agent's id",
            "requested_by": "who asked",
            "reason": "why",
            "erased_at": "when",
            "counts": "how many rows and objects went, per kind (JSON)",
        },
    ),
    "retention_policies": (
        "Per-agent retention: archive ended sessions after a while, erase them later",
        {
            "agent_id": "the agent",
            "archive_after": "archive an ended session this long after it ended (NULL: never)",
            "erase_after": "erase it this long after it ended (NULL: never)",
            "updated_by": "who set the policy",
            "updated_at": "when",
        },
    ),
}

KIND_FUNCTION = (
    "CREATE FUNCTION vigil_event_kind(kind text) RETURNS text LANGUAGE sql IMMUTABLE "
    "PARALLEL SAFE AS $$ SELECT CASE kind "
    + " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in RENAMED.items())
    + " ELSE kind END $$"
)

VIEWS: dict[str, tuple[str, str, dict[str, str]]] = {
    "sessions_view": (
        "Sessions with their agent version, status, steps, tokens, cost and duration",
        """
        SELECT s.id AS session_id, s.agent_id, s.agent_version, s.status, s.goal,
               s.step AS steps, s.run_count, s.tokens_in, s.tokens_out,
               s.tokens_in + s.tokens_out AS tokens, s.cost_usd,
               s.created_at AS started_at, s.finished_at AS ended_at,
               COALESCE(s.finished_at, now()) - s.created_at AS duration,
               (SELECT count(*) FROM events e
                 WHERE e.session_id = s.id AND e.kind = 'tool_call') AS tool_calls,
               (SELECT count(*) FROM events e
                 WHERE e.session_id = s.id AND e.kind = 'approval_requested') AS approvals,
               s.schedule_id, s.summary
          FROM sessions s
        """,
        {
            "session_id": "session id = Temporal workflow id",
            "agent_id": "the agent",
            "agent_version": "the agent definition's version (NULL: no definition)",
            "status": "running, waiting_approval, paused, completed, failed, cancelled, ...",
            "goal": "the current goal",
            "steps": "model steps taken",
            "run_count": "Temporal runs (continue-as-new)",
            "tokens_in": "model input tokens",
            "tokens_out": "model output tokens",
            "tokens": "tokens_in + tokens_out",
            "cost_usd": "model cost in USD",
            "started_at": "when it started",
            "ended_at": "when it ended (NULL: not ended)",
            "duration": "ended_at - started_at; so far, for a session not ended",
            "tool_calls": "tool calls recorded",
            "approvals": "approvals it asked for",
            "schedule_id": "the schedule that started it (NULL: by hand)",
            "summary": "the agent's final summary",
        },
    ),
    "tool_calls_view": (
        "Each tool call with its approval request, decision, decider and note, and the "
        "arguments that ran; a pending approval is a row with called_at NULL",
        """
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
        """,
        {
            "session_id": "the session",
            "agent_id": "the agent",
            "step": "the model step that asked for the call",
            "call_index": "position of the call among the step's calls, 0 first",
            "tool": "the tool's name",
            "call_id": "the model's id of the call",
            "arguments": "the arguments that ran (a human's edit when arguments_edited)",
            "arguments_edited": "a human edited the arguments when approving",
            "ok": "the tool succeeded (NULL: not run yet)",
            "rejected": "a human (or the approval's deadline) rejected the call",
            "output_preview": "the start of what the tool returned",
            "output_sha256": "the artifact holding the whole output, when it was large",
            "duration_ms": "how long the tool ran",
            "called_at": "when the call was recorded (NULL: waiting for approval)",
            "needed_approval": "the call waited for a human's approval",
            "approval_id": "the approval's id (a<step>-<index>), as `vigil approve` takes it",
            "approval_requested_at": "when approval was asked for",
            "requested_arguments": "the arguments as the model asked (preview)",
            "decision": "approve, reject or fail (NULL: not decided yet)",
            "decided_by": "who decided",
            "decision_note": "the note or reason they gave",
            "decided_at": "when they decided",
            "edited_arguments": "the arguments they substituted (NULL: approved as asked)",
        },
    ),
    "model_calls_view": (
        "Each model call with its model, tokens, cost and latency",
        """
        SELECT e.session_id, e.agent_id, e.step, e.payload ->> 'model' AS model,
               e.payload ->> 'connection' AS connection,
               (e.payload ->> 'tokens_in')::bigint AS tokens_in,
               (e.payload ->> 'tokens_out')::bigint AS tokens_out,
               (e.payload ->> 'cost_usd')::numeric AS cost_usd,
               (e.payload ->> 'latency_ms')::double precision AS latency_ms,
               e.payload ->> 'finish_reason' AS finish_reason,
               (e.payload ->> 'tool_calls')::int AS tool_calls,
               e.created_at AS called_at
          FROM events e WHERE e.kind = 'model_call'
        """,
        {
            "session_id": "the session",
            "agent_id": "the agent",
            "step": "the model step",
            "model": "the model that answered",
            "connection": "the named model connection used (NULL: the default)",
            "tokens_in": "input tokens",
            "tokens_out": "output tokens",
            "cost_usd": "cost in USD",
            "latency_ms": "how long the provider took",
            "finish_reason": "why the model stopped (stop, tool_calls, length, ...)",
            "tool_calls": "how many tool calls it asked for",
            "called_at": "when the reply was recorded",
        },
    ),
    "human_actions_view": (
        "Everything a person did to a session: approvals, pauses, messages, redirects, wakes, "
        "with who, when and why",
        """
        SELECT e.session_id, e.agent_id, e.step, vigil_event_kind(e.kind) AS kind,
               e.actor, e.reason, e.payload AS details, e.created_at AS at
          FROM events e WHERE e.actor IS NOT NULL
        """,
        {
            "session_id": "the session",
            "agent_id": "the agent",
            "step": "the session's step at the time",
            "kind": "what they did (approval_decided, session_paused, human_message, ...)",
            "actor": "who did it",
            "reason": "why, as they said (note, reason)",
            "details": "the rest of what was recorded (JSON)",
            "at": "when it was recorded",
        },
    ),
}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _comment(kind: str, name: str, columns: dict[str, str], text: str | None) -> None:
    op.execute(f"COMMENT ON {kind} {name} IS {_quote(text) if text else 'NULL'}")
    for column, about in columns.items():
        op.execute(f"COMMENT ON COLUMN {name}.{column} IS {_quote(about) if text else 'NULL'}")


def _rename(pairs: dict[str, str]) -> None:
    # Record maintenance: the append-only trigger lets this transaction rename, nothing else.
    op.execute("SELECT set_config('vigil.record_maintenance', 'on', true)")
    for old, new in pairs.items():
        op.execute(f"UPDATE events SET kind = {_quote(new)} WHERE kind = {_quote(old)}")
    op.execute("SELECT set_config('vigil.record_maintenance', '', true)")


def upgrade() -> None:
    for table, (about, columns) in COMMENTS.items():
        _comment("TABLE", table, columns, about)
    op.execute(KIND_FUNCTION)
    op.execute(f"GRANT EXECUTE ON FUNCTION vigil_event_kind(text) TO {ROLE}")
    op.execute(
        "COMMENT ON FUNCTION vigil_event_kind(text) IS "
        "'An event kind''s name now, for a row written under a name since renamed'"
    )
    _rename(RENAMED)
    for view, (about, query, columns) in VIEWS.items():
        op.execute(f"CREATE VIEW {view} WITH (security_invoker = true) AS {query}")
        op.execute(f"GRANT SELECT ON {view} TO {ROLE}")
        _comment("VIEW", view, columns, about)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    _rename({new: old for old, new in RENAMED.items()})
    op.execute("DROP FUNCTION IF EXISTS vigil_event_kind(text)")
    for table, (_, columns) in COMMENTS.items():
        if table != "api_tokens":  # its table comment came with its own migration
            _comment("TABLE", table, columns, None)
