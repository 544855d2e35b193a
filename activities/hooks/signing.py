"""HMAC-SHA256 signatures of webhook and trigger bodies, one scheme both ways.

The sender puts the Unix time in seconds in ``X-Vigil-Timestamp`` and
``sha256=<hex>`` in ``X-Vigil-Signature``, where hex is
``HMAC-SHA256(secret, timestamp + "." + body)`` over the exact body bytes. The receiver
recomputes it, compares in constant time, and refuses a timestamp further than its
tolerance from its own clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Vigil-Timestamp"
SIGNATURE_HEADER = "X-Vigil-Signature"
DELIVERY_HEADER = "X-Vigil-Delivery"
EVENT_HEADER = "X-Vigil-Event"
SCHEME = "sha256="
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Vigil-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, "sha256")
    return SCHEME + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers for sending ``body`` now."""
    ts = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: signature(secret, ts, body)}


def check(
    secret: str,
    timestamp: str | None,
    sig: str | None,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str | None:
    """Why the signature does not hold (a short reason), or None when it does."""
    if not timestamp or not sig:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return f"{TIMESTAMP_HEADER} must be Unix time in seconds"
    skew = abs((time.time() if now is None else now) - int(timestamp))
    if skew > tolerance:
        return f"{TIMESTAMP_HEADER} is more than {int(tolerance)} s away from the server's clock"
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), sig.strip().encode("utf-8", "replace")):
        return "the signature does not match"
    return None


def body_digest(timestamp: str, body: bytes) -> str:
    """What identifies one signed request (a replay carries the same)."""
    return hashlib.sha256(timestamp.encode("ascii") + b"." + body).hexdigest()
