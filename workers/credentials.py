"""Stored credentials as a service: set, list, delete. Values go in sealed and never come
out of here: listing shows names and dates only."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.credentials import SecretBox, check_name
from vigil.activities.record import credentials as table
from vigil.activities.record.credentials import CredentialInfo
from vigil.workers.models import ConfigError, secret_box
from vigil.workers.settings import Settings

__all__ = ["CredentialInfo", "CredentialService", "NoSuchCredential"]


class NoSuchCredential(LookupError):
    pass


async def is_stored(sessionmaker: async_sessionmaker[DbSession], name: str) -> bool:
    """Whether a credential named ``name`` is stored (its value is not opened)."""
    async with sessionmaker() as db:
        return await table.get(db, name) is not None


class CredentialService:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[DbSession]) -> None:
        self.settings = settings
        self.db = sessionmaker

    def _box(self) -> SecretBox:
        # The embedded stack keeps a key in its state folder (made on first use).
        embedded = self.settings.stack_info() is not None
        box = secret_box(self.settings, create=embedded)
        if box is None:
            raise ConfigError(
                "no key for stored credentials: set VIGIL_SECRET_KEY to 32 random bytes in "
                "base64 (e.g. `openssl rand -base64 32`), the same for workers and the CLI"
            )
        return box

    async def set(self, name: str, value: str) -> bool:
        """Store (or replace) ``name``; True when it is new."""
        problem = check_name(name)
        if problem:
            raise ValueError(problem)
        if not value:
            raise ValueError("the value is empty")
        sealed = self._box().seal(name, value)
        async with self.db.begin() as db:
            return await table.put(db, sealed)

    async def list_credentials(self) -> list[CredentialInfo]:
        async with self.db() as db:
            return await table.list_all(db)

    async def delete(self, name: str) -> None:
        async with self.db.begin() as db:
            if not await table.delete(db, name):
                raise NoSuchCredential(f"no credential named {name!r}")
