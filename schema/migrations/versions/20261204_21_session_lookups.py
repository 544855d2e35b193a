"""Sessions found by index however many an agent has, in any database locale.

A page of one agent's sessions, newest first (``vigil list --agent``, the API's
``GET /sessions?agent=``), read every session of the agent and sorted them, or walked
every newer session of the others: an index on (agent_id, created_at, id) gives the page
in its order. It replaces the index on agent_id alone, which it serves too
(``tests/integration/test_session_list_scale.py``).

A conversation by key has sessions whose ids are its first session's id and that id
followed by ``-2``, ``-3``... (``workers/keyed.py``); a message by key looks them up by
that prefix. The primary key's index serves a prefix only where text sorts byte-wise
(the ``C`` locale, as the embedded stack's database): in a database that sorts by a
locale (``C.UTF-8``, ``en_US.UTF-8``: what many PostgreSQL installs and images are set up
with) the lookup read every session of the agent. An index in byte order
(``text_pattern_ops``) serves it in any locale
(``tests/integration/test_keyed_lookup.py``). Both tests count the buffers a read
touches.

Revision ID: 20261204_21
Revises: 20261204_20
Create Date: 2026-12-04
"""

from __future__ import annotations

from vigil.schema.online_ddl import create_index_online, drop_index_online

revision = "20261204_21"
down_revision = "20261204_20"
branch_labels = None
depends_on = None

BY_AGENT = "ix_sessions_agent_id_created_at_id"
AGENT_ONLY = "ix_sessions_agent_id"
BY_PREFIX = "ix_sessions_id_prefix"


# Built and dropped while the sessions table takes writes (schema/online_ddl.py): a
# deployment's workers keep writing sessions during the upgrade.


def upgrade() -> None:
    create_index_online(BY_AGENT, "ON sessions (agent_id, created_at, id)")
    drop_index_online(AGENT_ONLY)
    create_index_online(BY_PREFIX, "ON sessions (id text_pattern_ops)")


def downgrade() -> None:
    drop_index_online(BY_PREFIX)
    create_index_online(AGENT_ONLY, "ON sessions (agent_id)")
    drop_index_online(BY_AGENT)
