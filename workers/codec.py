"""Payload encryption: a Temporal PayloadCodec with AES-GCM and key ids for rotation.

Every payload vigil puts in Temporal (workflow and activity inputs and results, signals,
updates, queries, memo, summaries, heartbeat and failure details) passes through the codec
on its way out and in. An encrypted payload carries the id of the key that sealed it in its
metadata, so a new current key never makes old history unreadable as long as the old key
stays in the key ring. Payloads without the marker (histories written before encryption,
JSON sent by the plain ``temporal`` CLI) decode as they are.

A payload that says it is encrypted but cannot be decrypted (a key id no key ring here
has, a payload altered or never sealed) is never read as data. The codec server refuses
it (HTTP 400, with the reason). The workers' and clients' converter decodes it to a
stand-in payload (``binary/undecryptable``, the reason in its metadata) that no payload
converter turns into a value: a session's control signal or update holding one is refused
and recorded like any malformed input, and every other reader (an activity's input or
result, a workflow's start input, a query) fails with the reason as it did before. The
SDK decodes a workflow activation's payloads all at once before the workflow sees any: a
codec that raised would fail the whole workflow task again and again, and one signal sent
with a made-up ``encoding`` would stop its session for good.

Keys come from ``VIGIL_PAYLOAD_KEYS`` / ``VIGIL_PAYLOAD_KEY_ID``, or else from the key file
the embedded stack generates in its state folder (``payload-keys.json``, mode 0600).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from vigil.schema.names import UNDECRYPTABLE_ENCODING, UNDECRYPTABLE_REASON
from vigil.workers.settings import (
    CODEC_TOKEN_FILE,
    KEY_ID,
    PAYLOAD_KEY_FILE,
    Settings,
    parse_payload_keys,
)

ENCODING = b"binary/encrypted"
"""The marker of an encrypted payload (the ``encoding`` metadata Temporal tools show)."""
META_KEY_ID = "encryption-key-id"
META_CIPHER = "encryption-cipher"
CIPHER = b"AES-GCM"
NONCE_BYTES = 12
_AAD = b"vigil/payload/v1|"
_SHOWN_KEY_ID = 80
"""Characters of a payload's key id quoted in an error (the id is whatever the sender put)."""


class PayloadKeyError(Exception):
    """A payload cannot be encrypted or decrypted: unknown key, wrong key, or tampering."""


def shown(key_id: str) -> str:
    """A key id as an error quotes it: the id is whatever the payload's sender wrote."""
    if len(key_id) > _SHOWN_KEY_ID:
        return repr(key_id[:_SHOWN_KEY_ID]) + "..."
    return repr(key_id)


@dataclass
class KeyRing:
    """Keys by id and the id new payloads are sealed with."""

    keys: dict[str, bytes]
    current: str
    reload: Callable[[], KeyRing | None] | None = None
    """Re-reads the key source (the stack's key file) when a payload names an unknown key,
    so a key rotated by another process is picked up without a restart."""
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise PayloadKeyError(
                f"current payload key {self.current!r} is not among the keys "
                f"({', '.join(sorted(self.keys)) or 'none'})"
            )

    def cipher(self, key_id: str) -> AESGCM:
        found = self._ciphers.get(key_id)
        if found is None:
            key = self.keys.get(key_id)
            # (An id no key file can hold is not worth re-reading the file for.)
            if key is None and self.reload is not None and KEY_ID.fullmatch(key_id):
                fresh = self.reload()
                if fresh is not None:
                    self.keys.update(fresh.keys)
                    key = self.keys.get(key_id)
            if key is None:
                raise PayloadKeyError(
                    f"payload encrypted with key {shown(key_id)}, which is not configured "
                    "(VIGIL_PAYLOAD_KEYS or the stack's payload-keys.json)"
                )
            found = self._ciphers[key_id] = AESGCM(key)
        return found


class EncryptionCodec(PayloadCodec):
    """AES-GCM over each whole serialized payload (metadata included), 96-bit random nonce.

    The key id is bound as associated data, so a payload relabelled with another key id
    fails to decrypt instead of being read under the wrong key.

    ``mark_undecryptable``: ``decode`` hands on a payload it cannot decrypt as a
    ``binary/undecryptable`` stand-in that holds the reason and none of the payload (what
    workers and clients use, see the module's doc); otherwise it raises
    :class:`PayloadKeyError` (the codec server).
    """

    def __init__(
        self, keyring: KeyRing, *, encrypt: bool = True, mark_undecryptable: bool = False
    ) -> None:
        self.keyring = keyring
        self.encrypt = encrypt
        self.mark_undecryptable = mark_undecryptable

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypt:
            return list(payloads)
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if self.mark_undecryptable:
            return [self.open_or_mark(p) for p in payloads]
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") == ENCODING:
            return payload  # already sealed (e.g. a payload passed through unchanged)
        key_id = self.keyring.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.keyring.cipher(key_id).encrypt(
            nonce, payload.SerializeToString(), _AAD + key_id.encode()
        )
        return Payload(
            metadata={
                "encoding": ENCODING,
                META_KEY_ID: key_id.encode(),
                META_CIPHER: CIPHER,
            },
            data=nonce + sealed,
        )

    def open(self, payload: Payload) -> Payload:
        """The payload ``payload`` sealed; raises :class:`PayloadKeyError` when it cannot
        be decrypted. Payloads without the encrypted marker are returned as they are."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption, or plain JSON from the temporal CLI
        key_id = payload.metadata.get(META_KEY_ID, b"").decode(errors="replace")
        cipher = self.keyring.cipher(key_id)
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, _AAD + key_id.encode())
            return Payload.FromString(plain)
        except (InvalidTag, ValueError, DecodeError):
            # InvalidTag: wrong key or altered; ValueError: too short to hold a nonce;
            # DecodeError: sealed with the key but not a payload.
            raise PayloadKeyError(
                f"payload does not decrypt with key {shown(key_id)}: wrong key or altered payload"
            ) from None

    def open_or_mark(self, payload: Payload) -> Payload:
        """``open``, or the ``binary/undecryptable`` stand-in saying why it failed."""
        try:
            return self.open(payload)
        except PayloadKeyError as exc:
            return undecryptable(str(exc))


def undecryptable(reason: str) -> Payload:
    """The stand-in for a payload that could not be decrypted (see the module's doc)."""
    return Payload(
        metadata={
            "encoding": UNDECRYPTABLE_ENCODING,
            UNDECRYPTABLE_REASON: reason.encode(errors="replace"),
        }
    )


# --- where the keys come from --------------------------------------------------------------


def load_keyring(settings: Settings) -> KeyRing | None:
    """The configured keys, else the stack's key file, else None (no encryption)."""
    if settings.payload_keys is not None:
        keys = parse_payload_keys(settings.payload_keys.get_secret_value())
        if not keys:
            return None
        current = settings.payload_key_id or _only(keys)
        return KeyRing(keys, current)
    path = settings.resolved_state_dir / PAYLOAD_KEY_FILE
    ring = _read_key_file(path, settings.payload_key_id)
    if ring is not None:
        ring.reload = lambda: _read_key_file(path, None)
    return ring


def payload_codec(
    settings: Settings, *, mark_undecryptable: bool = False
) -> EncryptionCodec | None:
    """The codec of ``settings``' keys (None without keys); ``mark_undecryptable`` as
    :class:`EncryptionCodec` says."""
    ring = load_keyring(settings)
    if ring is None:
        return None
    return EncryptionCodec(
        ring, encrypt=settings.payload_encryption, mark_undecryptable=mark_undecryptable
    )


def _only(keys: Mapping[str, bytes]) -> str:
    if len(keys) != 1:
        raise PayloadKeyError(
            f"{len(keys)} payload keys and no VIGIL_PAYLOAD_KEY_ID saying which is current"
        )
    return next(iter(keys))


def _read_key_file(path: Path, current: str | None) -> KeyRing | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PayloadKeyError(f"cannot read payload keys from {path}: {exc}") from exc
    keys = {str(k): base64.b64decode(v) for k, v in dict(data.get("keys", {})).items()}
    return KeyRing(keys, current or str(data.get("current") or _only(keys)))


def new_key_id() -> str:
    return f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


def ensure_key_file(state_dir: Path) -> Path:
    """Generate the stack's first key (AES-256) unless the key file exists."""
    path = state_dir / PAYLOAD_KEY_FILE
    if not path.exists():
        key_id = new_key_id()
        _write_private(path, _key_doc(key_id, {key_id: secrets.token_bytes(32)}), exclusive=True)
    return path


def rotate_key_file(state_dir: Path) -> str:
    """Add a new key to the stack's key file and make it current; old keys stay for reading."""
    path = ensure_key_file(state_dir)
    ring = _read_key_file(path, None)
    assert ring is not None
    key_id = new_key_id()
    while key_id in ring.keys:
        key_id = new_key_id()
    _write_private(path, _key_doc(key_id, {**ring.keys, key_id: secrets.token_bytes(32)}))
    return key_id


def _key_doc(current: str, keys: Mapping[str, bytes]) -> str:
    assert KEY_ID.fullmatch(current)
    encoded = {k: base64.b64encode(v).decode() for k, v in keys.items()}
    return json.dumps({"current": current, "keys": encoded}, indent=2) + "\n"


def codec_token(settings: Settings, *, create: bool = False) -> str | None:
    """The codec server's access token: configured, else the stack's token file."""
    if settings.codec_token is not None:
        return settings.codec_token.get_secret_value()
    path = settings.resolved_state_dir / CODEC_TOKEN_FILE
    if create and not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n", exclusive=True)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write a secret file readable by its owner only, atomically. ``exclusive`` keeps an
    existing file (two processes creating the first key at once must not both win)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
