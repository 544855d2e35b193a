"""Queries of agent definitions: immutable versions, and the version a session runs.

A version is never changed (a trigger refuses UPDATE and DELETE): applying a changed
definition adds version N+1, applying an unchanged one (same content hash as the newest)
adds nothing. Writers serialise on the agent's row (``SELECT ... FOR UPDATE``), so two
applies of the same agent at once never race for a version number.

The reads work as the table owner and under ``acting_for(agent)`` alike (row-level
security shows an agent its own versions only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record.lean import Statements
from vigil.activities.record.sql import sql
from vigil.schema import textcodec
from vigil.schema.limits import MAX_AGENT_ID, agent_id_problem


@dataclass(frozen=True)
class AgentVersionRow:
    agent_id: str
    version: int
    content_hash: str
    spec: dict[str, Any]
    """The validated AgentSpec as JSON (defaults filled in)."""
    tools: list[dict[str, Any]]
    """The tool catalog (ToolDescriptor JSON) computed when the version was applied."""
    source: str | None
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True)
class AgentSummaryRow:
    agent_id: str
    versions: int
    newest: int
    content_hash: str
    description: str
    updated_at: datetime


_COLUMNS = "agent_id, version, content_hash, spec, tools, source, created_by, created_at"


def _json(value: Any) -> Any:
    if isinstance(value, str):
        value = json.loads(value)
    return textcodec.decode_json(value)


def _row(r: Any) -> AgentVersionRow:
    return AgentVersionRow(
        agent_id=r["agent_id"],
        version=r["version"],
        content_hash=r["content_hash"],
        spec=_json(r["spec"]),
        tools=_json(r["tools"]),
        source=r["source"],
        created_by=r["created_by"],
        created_at=r["created_at"],
    )


_NEWEST = sql(
    "SELECT agent_id, version, content_hash, "
    "CASE WHEN version = :known AND content_hash = :known_hash THEN NULL ELSE spec END "
    "AS spec, "
    "CASE WHEN version = :known AND content_hash = :known_hash THEN NULL ELSE tools END "
    "AS tools, "
    "source, created_by, created_at "
    "FROM agent_versions WHERE agent_id = :agent ORDER BY version DESC LIMIT 1"
)


def _same(found: Any, known: AgentVersionRow) -> bool:
    return bool(found["version"] == known.version and found["content_hash"] == known.content_hash)


async def newest_version(
    db: Statements, agent_id: str, known: AgentVersionRow | None = None
) -> AgentVersionRow | None:
    """The agent's newest version. ``known``: a version of it read before; when that is
    still the newest, it is returned as it is (versions never change), its definition
    neither sent again nor decoded. The content hash must match too: an agent erased
    before 2026-12-07 (its versions deleted) and defined again started over at version
    1 (one erased since numbers on: ``_erased_versions``)."""
    params = {
        "agent": agent_id,
        "known": known.version if known is not None else 0,
        "known_hash": known.content_hash if known is not None else "",
    }
    found = (await db.execute(_NEWEST, params)).mappings().first()
    if found is None:
        return None
    if known is not None and _same(found, known):
        return known
    return _row(found)


async def get_version(db: Statements, agent_id: str, version: int) -> AgentVersionRow | None:
    found = (
        (
            await db.execute(
                sql(
                    f"SELECT {_COLUMNS} FROM agent_versions "
                    "WHERE agent_id = :agent AND version = :version"
                ),
                {"agent": agent_id, "version": version},
            )
        )
        .mappings()
        .first()
    )
    return _row(found) if found else None


async def list_versions(db: DbSession, agent_id: str) -> list[AgentVersionRow]:
    rows = (
        (
            await db.execute(
                sql(
                    f"SELECT {_COLUMNS} FROM agent_versions WHERE agent_id = :agent "
                    "ORDER BY version"
                ),
                {"agent": agent_id},
            )
        )
        .mappings()
        .all()
    )
    return [_row(r) for r in rows]


async def list_agents(db: DbSession) -> list[AgentSummaryRow]:
    """Every agent with a definition: its newest version, one row each."""
    rows = (
        (
            await db.execute(
                sql(
                    "SELECT DISTINCT ON (agent_id) agent_id, version, content_hash, "
                    "spec->'description' AS description, created_at, "
                    "count(*) OVER (PARTITION BY agent_id) AS versions "
                    "FROM agent_versions ORDER BY agent_id, version DESC"
                )
            )
        )
        .mappings()
        .all()
    )
    return [
        AgentSummaryRow(
            agent_id=r["agent_id"],
            versions=int(r["versions"]),
            newest=r["version"],
            content_hash=r["content_hash"],
            description=str(textcodec.decode_json(r["description"]) or ""),
            updated_at=r["created_at"],
        )
        for r in rows
    ]


async def newest_mcp_servers(db: DbSession) -> list[tuple[str, int, dict[str, Any]]]:
    """The MCP servers of every agent's newest version: (agent, version, server) for each
    server its definition names, as written (``McpServerSpec`` JSON)."""
    rows = (
        await db.execute(
            sql(
                "SELECT agent_id, version, spec->'mcp_servers' AS servers FROM ("
                "SELECT DISTINCT ON (agent_id) agent_id, version, spec FROM agent_versions "
                "ORDER BY agent_id, version DESC) newest "
                "WHERE jsonb_array_length(COALESCE(spec->'mcp_servers', '[]')) > 0 "
                "ORDER BY agent_id"
            )
        )
    ).mappings()
    return [
        (r["agent_id"], r["version"], server) for r in rows for server in _json(r["servers"]) or []
    ]


async def newest_webhook_secrets(db: DbSession) -> list[tuple[str, int, str, str]]:
    """The webhooks of every agent's newest version: (agent, version, URL, secret
    reference) for each its definition names."""
    rows = (
        await db.execute(
            sql(
                "SELECT agent_id, version, w->>'url' AS url, w->>'secret' AS secret FROM ("
                "SELECT DISTINCT ON (agent_id) agent_id, version, spec FROM agent_versions "
                "ORDER BY agent_id, version DESC) newest, "
                "jsonb_array_elements(CASE jsonb_typeof(spec->'webhooks') WHEN 'array' "
                "THEN spec->'webhooks' ELSE '[]' END) AS w "
                "ORDER BY agent_id"
            )
        )
    ).mappings()
    return [(r["agent_id"], r["version"], r["url"] or "", r["secret"] or "") for r in rows]


async def newest_model_connections(
    db: DbSession,
) -> list[tuple[str, int, str | None, str | None, str | None]]:
    """The model connection, fallback and model every agent's newest version names:
    (agent, version, connection, fallback, model), None where it names none."""
    rows = (
        await db.execute(
            sql(
                "SELECT DISTINCT ON (agent_id) agent_id, version, "
                "spec->'model'->>'connection' AS connection, "
                "spec->'model'->>'fallback' AS fallback, "
                "spec->'model'->>'model' AS model "
                "FROM agent_versions ORDER BY agent_id, version DESC"
            )
        )
    ).mappings()
    return [(r["agent_id"], r["version"], r["connection"], r["fallback"], r["model"]) for r in rows]


async def _erased_versions(db: DbSession, agent_id: str) -> int:
    """How many versions erasures of ``agent_id`` removed: its next definition's numbers
    start past them. Versions are numbered on from 1 (an erasure removes all of an
    agent's; nothing else removes one), so the sum is at least the highest ever given.
    Were they to start over at 1, a worker that read version 1 before an erasure would
    take its kept copy of the erased definition for the new version 1 (its tools, MCP
    servers, webhooks)."""
    erased = await db.execute(
        sql(
            "SELECT coalesce(sum((counts->>'agent_versions')::bigint), 0) FROM erasure_receipts "
            "WHERE subject_kind = 'agent' AND subject_id = :a"
        ),
        {"a": agent_id},
    )
    return int(erased.scalar_one())


async def add_version(
    db: DbSession,
    agent_id: str,
    *,
    spec: dict[str, Any],
    content_hash: str,
    tools: list[dict[str, Any]],
    source: str | None = None,
    created_by: str | None = None,
) -> tuple[AgentVersionRow, bool]:
    """Add a version unless the newest has the same content hash and tool catalog (a
    refreshed MCP listing can change the catalog of an unchanged file): (row, created).

    Call inside a transaction: the agent's row is locked until it commits.
    """
    await db.execute(
        sql("INSERT INTO agents (id, name) VALUES (:id, :name) ON CONFLICT (id) DO NOTHING"),
        {"id": agent_id, "name": agent_id},
    )
    await db.execute(sql("SELECT 1 FROM agents WHERE id = :id FOR UPDATE"), {"id": agent_id})
    newest = await newest_version(db, agent_id)
    if newest is not None and newest.content_hash == content_hash and newest.tools == tools:
        return newest, False
    version = (newest.version if newest is not None else await _erased_versions(db, agent_id)) + 1
    await db.execute(
        sql(
            "INSERT INTO agent_versions "
            "(agent_id, version, content_hash, spec, tools, source, created_by) "
            "VALUES (:agent, :version, :hash, CAST(:spec AS jsonb), CAST(:tools AS jsonb), "
            ":source, :by)"
        ),
        {
            "agent": agent_id,
            "version": version,
            "hash": content_hash,
            "spec": json.dumps(textcodec.encode_json(spec)),
            "tools": json.dumps(textcodec.encode_json(tools)),
            "source": source,
            "by": created_by,
        },
    )
    row = await get_version(db, agent_id, version)
    assert row is not None
    return row, True


async def set_session_agent(
    db: Statements,
    session_id: str,
    *,
    version: int | None,
    system_prompt: str | None = None,
) -> None:
    """Record the agent version a session runs (and its rendered system prompt)."""
    params: dict[str, Any] = {"id": session_id, "version": version}
    sets = ["agent_version = :version", "updated_at = now()"]
    if system_prompt is not None:
        sets.append("metadata = metadata || CAST(:meta AS jsonb)")
        params["meta"] = json.dumps(textcodec.encode_json({"system_prompt": system_prompt}))
    await db.execute(sql(f"UPDATE sessions SET {', '.join(sets)} WHERE id = :id"), params)


async def session_agent_version(db: DbSession, session_id: str) -> int | None:
    found = await db.execute(
        sql("SELECT agent_version FROM sessions WHERE id = :id"), {"id": session_id}
    )
    value = found.scalar_one_or_none()
    return int(value) if value is not None else None


async def agent_ids(db: DbSession) -> list[str]:
    """Every agent the record knows: with a definition, a session, or both."""
    return list((await db.execute(sql("SELECT id FROM agents ORDER BY id"))).scalars())


async def agent_known(sessionmaker: async_sessionmaker[DbSession], agent_id: str) -> bool:
    """Whether the record knows ``agent_id`` (a definition, a session, or both)."""
    async with sessionmaker() as db:
        known = await db.execute(
            sql("SELECT EXISTS (SELECT 1 FROM agents WHERE id = :id)"), {"id": agent_id}
        )
        return bool(known.scalar_one())


async def new_agent_id_problem(
    sessionmaker: async_sessionmaker[DbSession], agent_id: str
) -> str | None:
    """Why ``agent_id`` is refused (``schema.limits.agent_id_problem``), or None; an id the
    record knows already (a session or a definition an older build took) is not: its
    sessions, memories and tokens go on working under it. Reads the record only for an
    id the rule refuses."""
    why = agent_id_problem(agent_id)
    if why is None or "\x00" in agent_id or not 0 < len(agent_id) <= MAX_AGENT_ID:
        return why
    return None if await agent_known(sessionmaker, agent_id) else why
