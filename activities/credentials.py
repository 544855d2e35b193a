"""Named credentials, resolved inside activities only.

A model connection (or an MCP server) names its credential; the value is looked up when
an activity needs it and never leaves the worker's memory: no workflow history, log line,
record row or error message ever holds it.

- ``env:NAME`` reads the worker's environment variable ``NAME``.
- any other name reads the ``credentials`` table, where values are sealed with AES-GCM
  under a key from settings (``VIGIL_SECRET_KEY``); the credential's name is the
  associated data, so a sealed value copied onto another name does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.record import credentials as table
from vigil.activities.record.credentials import SealedCredential

KEY_BYTES = 32
NONCE_BYTES = 12
ENV_PREFIX = "env:"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
MAX_VALUE_BYTES = 64 * 1024


class CredentialError(Exception):
    """A credential cannot be had; the message names it (never its value)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a stored credential; None when it can."""
    if name.startswith(ENV_PREFIX):
        return f"{name!r} names an environment variable, not a stored credential"
    if not NAME_RE.fullmatch(name):
        return (
            f"bad credential name {name[:60]!r}: letters, digits, '_', '.', '-' "
            "(200 at most, starting with a letter or digit)"
        )
    return None


def parse_key(text: str) -> bytes:
    """A 32-byte key from base64 (standard or URL-safe) or 64 hex digits."""
    raw = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", raw):
        return bytes.fromhex(raw)
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the secret key is neither base64 nor hex") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"the secret key must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def new_key_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class SecretBox:
    """AES-256-GCM with one key; ``key_id`` tells which key sealed a value."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the secret key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"vigil-key-id:" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id!r})"

    @staticmethod
    def _aad(name: str) -> bytes:
        return b"vigil-credential:" + name.encode("utf-8")

    def seal(self, name: str, value: str) -> SealedCredential:
        data = value.encode("utf-8")
        if len(data) > MAX_VALUE_BYTES:
            raise ValueError(f"a credential holds at most {MAX_VALUE_BYTES} bytes")
        nonce = os.urandom(NONCE_BYTES)
        return SealedCredential(
            name=name,
            nonce=nonce,
            ciphertext=self._aead.encrypt(nonce, data, self._aad(name)),
            key_id=self.key_id,
        )

    def open(self, sealed: SealedCredential) -> str:
        if sealed.key_id != self.key_id:
            raise CredentialError(
                sealed.name,
                f"credential {sealed.name!r} was sealed with another secret key "
                f"(key id {sealed.key_id}, this worker's is {self.key_id}): set it again",
            )
        try:
            data = self._aead.decrypt(sealed.nonce, sealed.ciphertext, self._aad(sealed.name))
        except InvalidTag as exc:
            raise CredentialError(
                sealed.name, f"credential {sealed.name!r} does not open with this key"
            ) from exc
        return data.decode("utf-8")


class CredentialResolver:
    """Resolves a credential name to its value, inside an activity."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession] | None,
        box: SecretBox | Callable[[], SecretBox | None] | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``box`` may be a loader, asked at each use until it has a key (a key made
        after the worker started is then found without a restart)."""
        self._sessionmaker = sessionmaker
        self._box = box
        self._environ = environ

    def _key(self) -> SecretBox | None:
        if self._box is None or isinstance(self._box, SecretBox):
            return self._box
        found = self._box()
        if found is not None:
            self._box = found
        return found

    def __repr__(self) -> str:
        return (
            f"CredentialResolver(box={self._box if isinstance(self._box, SecretBox) else None!r})"
        )

    async def resolve(self, name: str) -> str:
        if name.startswith(ENV_PREFIX):
            var = name[len(ENV_PREFIX) :]
            env = self._environ if self._environ is not None else os.environ
            value = env.get(var)
            if not value:
                raise CredentialError(
                    name, f"credential {name!r}: environment variable {var} is not set"
                )
            return value
        if self._sessionmaker is None:
            raise CredentialError(name, f"credential {name!r}: no credential store")
        async with self._sessionmaker() as db:
            sealed = await table.get(db, name)
        if sealed is None:
            raise CredentialError(
                name, f"credential {name!r} is not set (set it with `vigil secret set {name}`)"
            )
        box = self._key()
        if box is None:
            raise CredentialError(
                name, f"credential {name!r} is stored encrypted, but VIGIL_SECRET_KEY is not set"
            )
        return box.open(sealed)
