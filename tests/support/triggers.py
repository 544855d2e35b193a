"""Sending signed trigger deliveries to the API, as a sender would."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from vigil.activities.hooks import signing


async def deliver(
    http: httpx.AsyncClient,
    trigger: str,
    body: Any,
    secret: str | None,
    *,
    delivery: str | None = None,
    at: float | None = None,
    signed_body: bytes | None = None,
) -> httpx.Response:
    """POST ``body`` to the trigger, signed with ``secret`` (unsigned when None).

    ``signed_body`` signs other bytes than those sent (a tampered request)."""
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers.update(signing.signed_headers(secret, signed_body or raw, at or time.time()))
    if delivery is not None:
        headers[signing.DELIVERY_HEADER] = delivery
    return await http.post(f"/v1/triggers/{trigger}", content=raw, headers=headers)
