"""Triggers made with the CLI, and signed deliveries sent to the API as a sender would."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from vigil.activities.hooks import signing

if TYPE_CHECKING:
    from tests.integration.conftest import CLIStack


def create(cli: CLIStack, *args: str) -> tuple[str, str]:
    """(name, secret) of a new trigger made with `vigil trigger create`."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    made = cli.vigil.json("trigger", "create", name, *args)
    assert made["name"] == name and len(made["secret"]) >= 32
    return name, str(made["secret"])


async def deliver(
    http: httpx.AsyncClient,
    trigger: str,
    body: Any,
    secret: str | None,
    *,
    delivery: str | None = None,
    at: float | None = None,
    signed_body: bytes | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    """POST ``body`` to the trigger, signed with ``secret`` (unsigned when None).

    ``signed_body`` signs other bytes than those sent (a tampered request); ``raw`` sends
    these bytes as the body instead of ``body`` in JSON (what ``json.dumps`` cannot
    write: a key given twice, a lone surrogate's escape)."""
    raw = json.dumps(body).encode() if raw is None else raw
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers.update(signing.signed_headers(secret, signed_body or raw, at or time.time()))
    if delivery is not None:
        headers[signing.DELIVERY_HEADER] = delivery
    return await http.post(f"/v1/triggers/{trigger}", content=raw, headers=headers)
