"""Queries of the encrypted credentials table (system work only: no agent role reads it).

Rows hold AES-GCM ciphertext; encrypting and decrypting is ``activities.credentials``'
job, so nothing here ever sees a plaintext value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession


@dataclass(frozen=True)
class SealedCredential:
    name: str
    nonce: bytes
    ciphertext: bytes
    key_id: str


@dataclass(frozen=True)
class CredentialInfo:
    """What may be shown of a credential: never its value."""

    name: str
    key_id: str
    created_at: datetime
    updated_at: datetime


async def put(db: DbSession, sealed: SealedCredential) -> bool:
    """Insert or replace; True when the name was new."""
    result = await db.execute(
        text(
            "INSERT INTO credentials (name, nonce, ciphertext, key_id) "
            "VALUES (:name, :nonce, :ct, :key) "
            "ON CONFLICT (name) DO UPDATE SET nonce = EXCLUDED.nonce, "
            "ciphertext = EXCLUDED.ciphertext, key_id = EXCLUDED.key_id, updated_at = now() "
            "RETURNING (xmax = 0) AS inserted"
        ),
        {
            "name": sealed.name,
            "nonce": sealed.nonce,
            "ct": sealed.ciphertext,
            "key": sealed.key_id,
        },
    )
    return bool(result.scalar_one())


async def get(db: DbSession, name: str) -> SealedCredential | None:
    row = (
        (
            await db.execute(
                text("SELECT name, nonce, ciphertext, key_id FROM credentials WHERE name = :n"),
                {"n": name},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return SealedCredential(
        name=row["name"],
        nonce=bytes(row["nonce"]),
        ciphertext=bytes(row["ciphertext"]),
        key_id=row["key_id"],
    )


async def list_all(db: DbSession) -> list[CredentialInfo]:
    rows = (
        (
            await db.execute(
                text("SELECT name, key_id, created_at, updated_at FROM credentials ORDER BY name")
            )
        )
        .mappings()
        .all()
    )
    return [
        CredentialInfo(
            name=r["name"],
            key_id=r["key_id"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


async def delete(db: DbSession, name: str) -> bool:
    result = await db.execute(
        text("DELETE FROM credentials WHERE name = :n RETURNING name"), {"n": name}
    )
    return result.first() is not None
