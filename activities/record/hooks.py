"""Queries of the trigger and webhook tables (system work only: no agent role reads them).

Trigger secrets arrive here sealed (AES-GCM ciphertext); sealing and opening is
``activities.credentials``' job, so nothing here sees a secret in plain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.credentials import SealedCredential
from vigil.activities.record.lean import Statements, xact_lock
from vigil.schema import textcodec

# --- triggers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerRow:
    name: str
    agent_id: str
    action: str
    goal_template: str | None
    message_template: str | None
    key_field: str | None
    secret: SealedCredential
    created_by: str
    created_at: datetime
    rotated_at: datetime | None


_TRIGGER_COLUMNS = (
    "name, agent_id, action, goal_template, message_template, key_field, secret_nonce, "
    "secret_ciphertext, secret_key_id, created_by, created_at, rotated_at"
)


def sealed_name(trigger: str) -> str:
    """The associated data a trigger's secret is sealed under (binds it to the trigger)."""
    return f"trigger:{trigger}"


def _trigger(r: Any) -> TriggerRow:
    m = r._mapping
    return TriggerRow(
        name=m["name"],
        agent_id=m["agent_id"],
        action=m["action"],
        goal_template=m["goal_template"],
        message_template=m["message_template"],
        key_field=m["key_field"],
        secret=SealedCredential(
            name=sealed_name(m["name"]),
            nonce=bytes(m["secret_nonce"]),
            ciphertext=bytes(m["secret_ciphertext"]),
            key_id=m["secret_key_id"],
        ),
        created_by=m["created_by"],
        created_at=m["created_at"],
        rotated_at=m["rotated_at"],
    )


async def insert_trigger(
    db: DbSession,
    *,
    name: str,
    agent_id: str,
    action: str,
    goal_template: str | None,
    message_template: str | None,
    key_field: str | None,
    secret: SealedCredential,
    created_by: str,
) -> TriggerRow | None:
    """The new trigger, or None when the name is taken."""
    result = await db.execute(
        text(
            "INSERT INTO triggers (name, agent_id, action, goal_template, message_template, "
            "key_field, secret_nonce, secret_ciphertext, secret_key_id, created_by) "
            "VALUES (:name, :agent, :action, :goal, :message, :key, :nonce, :ct, :kid, :by) "
            f"ON CONFLICT (name) DO NOTHING RETURNING {_TRIGGER_COLUMNS}"
        ),
        {
            "name": name,
            "agent": agent_id,
            "action": action,
            "goal": goal_template,
            "message": message_template,
            "key": key_field,
            "nonce": secret.nonce,
            "ct": secret.ciphertext,
            "kid": secret.key_id,
            "by": created_by,
        },
    )
    row = result.one_or_none()
    return _trigger(row) if row is not None else None


async def get_trigger(db: DbSession, name: str) -> TriggerRow | None:
    result = await db.execute(
        text(f"SELECT {_TRIGGER_COLUMNS} FROM triggers WHERE name = :n"), {"n": name}
    )
    row = result.one_or_none()
    return _trigger(row) if row is not None else None


async def list_triggers(db: DbSession, agents: list[str] | None = None) -> list[TriggerRow]:
    """Triggers by name; ``agents`` (when not None) limits them to those agents'."""
    result = await db.execute(
        text(
            f"SELECT {_TRIGGER_COLUMNS} FROM triggers "
            "WHERE (CAST(:agents AS text[]) IS NULL OR agent_id = ANY(:agents)) ORDER BY name"
        ),
        {"agents": agents},
    )
    return [_trigger(r) for r in result]


async def delete_trigger(db: DbSession, name: str) -> bool:
    result = await db.execute(
        text("DELETE FROM triggers WHERE name = :n RETURNING name"), {"n": name}
    )
    return result.one_or_none() is not None


async def replace_secret(db: DbSession, name: str, secret: SealedCredential) -> bool:
    result = await db.execute(
        text(
            "UPDATE triggers SET secret_nonce = :nonce, secret_ciphertext = :ct, "
            "secret_key_id = :kid, rotated_at = now() WHERE name = :n RETURNING name"
        ),
        {"n": name, "nonce": secret.nonce, "ct": secret.ciphertext, "kid": secret.key_id},
    )
    return result.one_or_none() is not None


# --- trigger deliveries -------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerDelivery:
    id: int
    delivery_id: str
    state: str
    """``pending`` while the first request acts on it, ``done`` once it answered."""
    status_code: int | None
    result: dict[str, Any] | None


def _delivery(r: Any) -> TriggerDelivery:
    m = r._mapping
    return TriggerDelivery(
        id=m["id"],
        delivery_id=m["delivery_id"],
        state=m["state"],
        status_code=m["status_code"],
        result=m["result"],
    )


async def claim_delivery(
    db: DbSession, trigger: str, delivery_id: str, body_sha256: str, stale_seconds: float
) -> tuple[TriggerDelivery, bool]:
    """(the delivery's row, True when this request is the one to act on it).

    A delivery id seen before, or the same signed request (timestamp and body) sent
    again under another id, is the earlier delivery. A pending claim older than
    ``stale_seconds`` (its request died mid-way) is taken over.
    """
    cols = "id, delivery_id, state, status_code, result"
    # Copies of one signed request sent at once under other ids are told apart from the
    # first only by its row: each claim of the same body waits for the one before to
    # commit (until then none would see another's row, and each would act).
    await db.execute(text(f"SELECT {xact_lock(f'vigil.trigger-body.{body_sha256}.{trigger}')}"))
    same = await db.execute(
        text(
            f"SELECT {cols} FROM trigger_deliveries WHERE trigger_name = :t "
            "AND (delivery_id = :d OR body_sha256 = :h) ORDER BY id LIMIT 1"
        ),
        {"t": trigger, "d": delivery_id, "h": body_sha256},
    )
    found = same.one_or_none()
    if found is None:
        inserted = await db.execute(
            text(
                "INSERT INTO trigger_deliveries (trigger_name, delivery_id, body_sha256) "
                "VALUES (:t, :d, :h) ON CONFLICT (trigger_name, delivery_id) DO NOTHING "
                f"RETURNING {cols}"
            ),
            {"t": trigger, "d": delivery_id, "h": body_sha256},
        )
        row = inserted.one_or_none()
        if row is not None:
            return _delivery(row), True
        found = (
            await db.execute(
                text(
                    f"SELECT {cols} FROM trigger_deliveries "
                    "WHERE trigger_name = :t AND delivery_id = :d"
                ),
                {"t": trigger, "d": delivery_id},
            )
        ).one()
    earlier = _delivery(found)
    if earlier.state == "pending":
        taken = await db.execute(
            text(
                "UPDATE trigger_deliveries SET received_at = now() WHERE id = :id "
                "AND state = 'pending' AND received_at < now() - make_interval(secs => :s) "
                "RETURNING id"
            ),
            {"id": earlier.id, "s": stale_seconds},
        )
        return earlier, taken.one_or_none() is not None
    return earlier, False


async def finish_delivery(
    db: DbSession, row_id: int, status_code: int, result: dict[str, Any]
) -> None:
    await db.execute(
        text(
            "UPDATE trigger_deliveries SET state = 'done', status_code = :code, "
            "result = CAST(:result AS jsonb), done_at = now() WHERE id = :id"
        ),
        {"id": row_id, "code": status_code, "result": _json(result)},
    )


async def release_delivery(db: DbSession, row_id: int) -> None:
    """Forget a claim whose action could not be taken, so the sender's retry can act."""
    await db.execute(
        text("DELETE FROM trigger_deliveries WHERE id = :id AND state = 'pending'"),
        {"id": row_id},
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --- webhooks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookRow:
    id: int
    agent_id: str
    url: str
    events: list[str]
    secret_ref: str
    """``env:VAR`` or a stored credential's name: never the secret."""
    created_at: datetime


def _webhook(r: Any) -> WebhookRow:
    m = r._mapping
    return WebhookRow(
        id=m["id"],
        agent_id=m["agent_id"],
        url=m["url"],
        events=list(m["events"]),
        secret_ref=m["secret_ref"],
        created_at=m["created_at"],
    )


async def lock_agent_webhooks(db: DbSession, agent_id: str) -> None:
    """Until the transaction ends, no other one adds ``agent_id``'s webhooks: two adds of
    one URL at once both found none and both went in."""
    await db.execute(text(f"SELECT {xact_lock(f'vigil.webhooks:{agent_id}')}"))


async def insert_webhook(
    db: DbSession, *, agent_id: str, url: str, events: list[str], secret_ref: str
) -> WebhookRow:
    result = await db.execute(
        text(
            "INSERT INTO webhooks (agent_id, url, events, secret_ref) "
            "VALUES (:a, :u, :e, :s) RETURNING id, agent_id, url, events, secret_ref, created_at"
        ),
        {"a": agent_id, "u": url, "e": events, "s": secret_ref},
    )
    return _webhook(result.one())


_WEBHOOKS = "SELECT id, agent_id, url, events, secret_ref, created_at FROM webhooks"
_ALL_WEBHOOKS = text(f"{_WEBHOOKS} ORDER BY id")
_AGENT_WEBHOOKS = text(f"{_WEBHOOKS} WHERE agent_id = :a ORDER BY id")


async def list_webhooks(db: Statements, agent_id: str | None = None) -> list[WebhookRow]:
    """``agent_id``'s webhooks (every agent's when None); ``db``: a session or a lean
    connection (a session start reads its agent's in one round trip)."""
    if agent_id is None:
        result = await db.execute(_ALL_WEBHOOKS)
    else:
        result = await db.execute(_AGENT_WEBHOOKS, {"a": agent_id})
    return [_webhook(r) for r in result]


async def delete_webhook(db: DbSession, webhook_id: int) -> bool:
    result = await db.execute(
        text("DELETE FROM webhooks WHERE id = :i RETURNING id"), {"i": webhook_id}
    )
    return result.one_or_none() is not None


# --- webhook deliveries ------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookAttempt:
    id: int
    delivery_id: str
    webhook: str
    agent_id: str
    session_id: str
    event: str
    url: str
    attempt: int
    outcome: str
    """``delivered``, ``failed`` (to be retried) or ``rejected`` (the receiver refused it)."""
    status_code: int | None
    error: str | None
    at: datetime


_ATTEMPT_COLUMNS = (
    "id, delivery_id, webhook, agent_id, session_id, event, url, attempt, outcome, "
    "status_code, error, at"
)


async def settled_webhooks(db: DbSession, delivery_id: str) -> set[str]:
    """The webhooks a delivery is done with (delivered, or refused for good)."""
    result = await db.execute(
        text(
            "SELECT DISTINCT webhook FROM webhook_deliveries WHERE delivery_id = :d "
            "AND outcome IN ('delivered', 'rejected')"
        ),
        {"d": delivery_id},
    )
    return {r[0] for r in result}


async def record_attempt(
    db: DbSession,
    *,
    delivery_id: str,
    webhook: str,
    agent_id: str,
    session_id: str,
    event: str,
    url: str,
    attempt: int,
    outcome: str,
    status_code: int | None,
    error: str | None,
) -> None:
    await db.execute(
        text(
            "INSERT INTO webhook_deliveries (delivery_id, webhook, agent_id, session_id, event, "
            "url, attempt, outcome, status_code, error) VALUES (:d, :w, :a, :s, :e, :u, :n, :o, "
            ":c, :err) ON CONFLICT (delivery_id, webhook, attempt) DO NOTHING"
        ),
        {
            "d": delivery_id,
            "w": webhook,
            "a": agent_id,
            "s": session_id,
            "e": event,
            "u": url,
            "n": attempt,
            "o": outcome,
            "c": status_code,
            # A receiver's answer may hold NUL, which no TEXT column takes: kept readable.
            "err": textcodec.plain(error) if error is not None else None,
        },
    )


async def list_attempts(
    db: DbSession,
    *,
    agent_id: str | None = None,
    session_id: str | None = None,
    agents: list[str] | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[WebhookAttempt]:
    """Attempts oldest first, filtered by agent and session, paged by id; ``agents`` (when
    not None) limits them to those agents'."""
    result = await db.execute(
        text(
            f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE id > :after "
            "AND (CAST(:a AS text) IS NULL OR agent_id = :a) "
            "AND (CAST(:agents AS text[]) IS NULL OR agent_id = ANY(:agents)) "
            "AND (CAST(:s AS text) IS NULL OR session_id = :s) ORDER BY id LIMIT :lim"
        ),
        {"after": after_id, "a": agent_id, "agents": agents, "s": session_id, "lim": limit},
    )
    out = []
    for r in result:
        m = r._mapping
        out.append(WebhookAttempt(**{k: m[k] for k in _ATTEMPT_COLUMNS.split(", ")}))
    return out
