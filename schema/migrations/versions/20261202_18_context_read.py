"""The model call's read of the record in one statement: ``vigil_context_read``.

A model call read its session's row, whether its reply was written already, the newest
summary's key, the messages written since the worker's kept window (or the whole recent
window), the session's artifacts and, last, whether a kept recall result still holds only
live memories: five statements and a ``SET`` for the last one's lock bound, in a
transaction, so eight round trips. On this machine each round trip costs the step about
0.2 ms of this process's CPU and a wake-up of the database's backend, and the socket
writes alone were a sixth of the model activity's CPU.

``vigil_context_read`` does the same reads in one call. It runs as its caller
(``SECURITY INVOKER``: the agent's row-level security applies to every read) and reads
what the caller does not hold: the newest summary event only when its key differs from
the one given, the recent window only when no ``after_seq`` is given (else what is newer
or fills a gap), the artifacts only when asked. The kept recall's check is
``vigil_live_memories``: waiting on a lock (a ``LOCK TABLE`` or DDL on ``memories``) no
longer than what is left of ``lock_ms`` after the reads before it, bounded by PostgreSQL
itself, and answering ``blocked`` rather
than failing the read when the bound is passed. The setting it changes for that is put
back before it returns.

Rows come back as JSON (``json``, not ``jsonb``: built as text, cheaper to make and
read), the same columns as the statements they replace.

Revision ID: 20261202_18
Revises: 20261201_17
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "20261202_18"
down_revision = "20261201_17"
branch_labels = None
depends_on = None

ROLE = "vigil_agent"
LIVE_MEMORIES = "vigil_live_memories(bigint[], integer)"
CONTEXT_READ = (
    "vigil_context_read(text, integer, text[], text, integer, integer[], integer, boolean, "
    "bigint[], integer)"
)
_SESSION_COLUMNS = (
    "id, agent_id, goal, status, step, run_count, schedule_id, tokens_in, tokens_out, "
    "cost_usd, summary, created_at, updated_at, finished_at, metadata"
)
_MESSAGE_COLUMNS = (
    "session_id, seq, role, content, content_enc, step, name, tool_calls, tool_call_id, created_at"
)
_EVENT_COLUMNS = "key, kind, step, actor, reason, payload, created_at"


def _qualified(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _schema() -> str:
    schema = str(op.get_bind().execute(text("SELECT current_schema()")).scalar_one())
    return '"' + schema.replace('"', '""') + '"'


def upgrade() -> None:
    schema = _schema()
    op.execute(
        f"""
        CREATE FUNCTION vigil_live_memories(ids bigint[], lock_ms integer,
                                            OUT live bigint[], OUT blocked boolean)
        LANGUAGE plpgsql VOLATILE SET search_path = {schema}, pg_temp AS $$
        DECLARE
            before text := current_setting('lock_timeout');
        BEGIN
            blocked := false;
            IF lock_ms IS NOT NULL THEN
                PERFORM set_config('lock_timeout', greatest(lock_ms, 1) || 'ms', true);
            END IF;
            BEGIN
                live := ARRAY(
                    SELECT m.id FROM memories m
                    WHERE m.agent_id = current_setting('vigil.agent_id', true)
                      AND m.id = ANY(ids)
                      AND m.forgotten_at IS NULL AND m.superseded_by IS NULL
                );
            EXCEPTION WHEN lock_not_available THEN
                live := NULL;
                blocked := true;
            END;
            PERFORM set_config('lock_timeout', before, true);
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION vigil_context_read(
            sid text, reply_seq integer, summary_kinds text[], held_summary text,
            after_seq integer, gap_seqs integer[], recent integer, with_artifacts boolean,
            memory_ids bigint[], lock_ms integer,
            OUT session_row json, OUT reply_written boolean, OUT newest_summary_key text,
            OUT newest_summary json, OUT new_messages json, OUT artifact_refs json,
            OUT live_ids bigint[], OUT recall_blocked boolean
        )
        LANGUAGE plpgsql VOLATILE SET search_path = {schema}, pg_temp AS $$
        DECLARE
            left_ms integer;
        BEGIN
            SELECT row_to_json(s) INTO session_row
            FROM (SELECT {_qualified("x", _SESSION_COLUMNS)} FROM sessions x WHERE x.id = sid) s;
            IF session_row IS NULL THEN
                RETURN;  -- erased, or never was
            END IF;
            reply_written := EXISTS (
                SELECT FROM messages m WHERE m.session_id = sid AND m.seq = reply_seq
            );
            SELECT e.key INTO newest_summary_key FROM events e
            WHERE e.session_id = sid AND e.kind = ANY(summary_kinds)
            ORDER BY e.id DESC LIMIT 1;
            IF newest_summary_key IS DISTINCT FROM held_summary
               AND newest_summary_key IS NOT NULL THEN
                SELECT row_to_json(r) INTO newest_summary FROM (
                    SELECT {_qualified("e", _EVENT_COLUMNS)} FROM events e
                    WHERE e.session_id = sid AND e.key = newest_summary_key
                ) r;
            END IF;
            IF after_seq IS NULL THEN
                SELECT coalesce(json_agg(r ORDER BY r.seq), '[]') INTO new_messages FROM (
                    SELECT {_qualified("m", _MESSAGE_COLUMNS)} FROM messages m
                    WHERE m.session_id = sid ORDER BY m.seq DESC LIMIT recent
                ) r;
            ELSE
                SELECT coalesce(json_agg(r ORDER BY r.seq), '[]') INTO new_messages FROM (
                    SELECT {_qualified("m", _MESSAGE_COLUMNS)} FROM messages m
                    WHERE m.session_id = sid AND (m.seq > after_seq OR m.seq = ANY(gap_seqs))
                ) r;
            END IF;
            IF with_artifacts THEN
                SELECT coalesce(json_agg(r ORDER BY r.name), '[]') INTO artifact_refs FROM (
                    SELECT l.session_id, l.name, a.sha256, a.size, a.mime_type,
                           a.storage_uri, l.created_at
                    FROM artifact_links l JOIN artifacts a ON a.sha256 = l.sha256
                    WHERE l.session_id = sid
                ) r;
            END IF;
            IF memory_ids IS NOT NULL THEN
                -- The bound is what is left of it once the reads above are done.
                left_ms := lock_ms - (
                    extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000
                )::integer;
                IF left_ms IS NOT NULL AND left_ms <= 0 THEN
                    recall_blocked := true;  -- no time left for the check
                ELSE
                    SELECT c.live, c.blocked INTO live_ids, recall_blocked
                    FROM vigil_live_memories(memory_ids, left_ms) c;
                END IF;
            END IF;
        END
        $$
        """
    )


    for signature in (LIVE_MEMORIES, CONTEXT_READ):
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {CONTEXT_READ}")
    op.execute(f"DROP FUNCTION {LIVE_MEMORIES}")
