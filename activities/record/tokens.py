"""Queries of the ``api_tokens`` table (system work only: no agent role reads it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession


@dataclass(frozen=True)
class TokenRow:
    id: str
    owner: str
    name: str
    secret_sha256: bytes
    scope: str
    agents: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


_COLUMNS = (
    "id, owner, name, secret_sha256, scope, agents, created_at, expires_at, revoked_at, "
    "last_used_at"
)


def _row(r: object) -> TokenRow:
    m = r._mapping  # type: ignore[attr-defined]
    return TokenRow(
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        secret_sha256=bytes(m["secret_sha256"]),
        scope=m["scope"],
        agents=list(m["agents"]) if m["agents"] is not None else None,
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


async def insert(
    db: DbSession,
    *,
    token_id: str,
    owner: str,
    name: str,
    secret_sha256: bytes,
    scope: str,
    agents: list[str] | None,
    expires_at: datetime | None,
) -> TokenRow:
    result = await db.execute(
        text(
            "INSERT INTO api_tokens (id, owner, name, secret_sha256, scope, agents, expires_at) "
            "VALUES (:id, :owner, :name, :h, :scope, :agents, :exp) "
            f"RETURNING {_COLUMNS}"
        ),
        {
            "id": token_id,
            "owner": owner,
            "name": name,
            "h": secret_sha256,
            "scope": scope,
            "agents": agents,
            "exp": expires_at,
        },
    )
    return _row(result.one())


async def get(db: DbSession, token_id: str) -> TokenRow | None:
    result = await db.execute(
        text(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = :id"), {"id": token_id}
    )
    row = result.one_or_none()
    return _row(row) if row is not None else None


async def list_all(db: DbSession, *, include_revoked: bool = False) -> list[TokenRow]:
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    result = await db.execute(
        text(f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY created_at, id")
    )
    return [_row(r) for r in result]


async def revoke(db: DbSession, token_id: str) -> bool:
    """True when the token existed and was live; revoking twice is not an error."""
    result = await db.execute(
        text(
            "UPDATE api_tokens SET revoked_at = now() "
            "WHERE id = :id AND revoked_at IS NULL RETURNING id"
        ),
        {"id": token_id},
    )
    return result.one_or_none() is not None


async def touch(db: DbSession, token_id: str) -> None:
    """Note the token was used (at most once a minute, to keep writes rare)."""
    await db.execute(
        text(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = :id "
            "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
        ),
        {"id": token_id},
    )
