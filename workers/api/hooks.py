"""Triggers and webhooks over HTTP.

- ``POST /v1/triggers/{name}``: no bearer token; the body is signed with the trigger's
  secret (``X-Vigil-Timestamp``, ``X-Vigil-Signature: sha256=<hex>`` of
  HMAC-SHA256(secret, timestamp + "." + body); see ``activities/hooks/signing.py``) and
  is idempotent on ``X-Vigil-Delivery``: the same delivery again gets the same answer and
  acts once. Without the header, the signed request itself (timestamp and body) is the
  delivery. A name that is no trigger is answered as a trigger answers a request not
  signed with its secret (401), so names cannot be found by trying.
- ``GET /v1/triggers`` and ``GET /v1/webhooks/deliveries``: admin tokens, which see only
  the triggers and deliveries of the agents they cover (naming another agent is 403).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vigil.activities.credentials import CredentialError
from vigil.activities.hooks import signing
from vigil.schema import jsonlimits
from vigil.workers.api.auth import Admin, check_agent
from vigil.workers.api.deps import MAX_SESSION_ID_CHARS
from vigil.workers.api.errors import (
    BAD_SIGNATURE,
    CONFLICT,
    INVALID,
    MALFORMED,
    UNAVAILABLE,
    ApiError,
    ErrorBody,
    ErrorResponse,
    unreadable_json,
    vigil_message,
    vigil_status,
)
from vigil.workers.client import NotFound, Unreachable, VigilClient, VigilError
from vigil.workers.hooks import TriggerRow, TriggerService, WebhookService
from vigil.workers.models import ConfigError

router = APIRouter(tags=["triggers and webhooks"])

MAX_BODY_DEPTH = 64
"""A delivery nested deeper is refused: no sender's event is, and Python's JSON parser
(and every later copy of the payload) recurses once per level."""


class TriggerFired(BaseModel):
    """What a delivery did (the same answer for the same delivery sent again)."""

    trigger: str
    delivery_id: str
    action: str
    outcome: str
    """``started``, ``messaged``, ``woken`` or ``exists``; in a replay, ``erased`` once the
    session it acted on was erased."""
    session_id: str | None
    """The session it acted on; null in a replay once that session was erased."""
    queued: bool = False
    """True when no worker polled the session's task queue: the message or wake was left
    with Temporal as a signal, and the session takes it (or records why it refused it)
    once a worker runs it."""
    replayed: bool = False
    """True when this delivery was acted on before: nothing was done again."""


class TriggerInfo(BaseModel):
    name: str
    agent_id: str
    action: str
    goal_template: str | None
    message_template: str | None
    key_field: str | None
    created_by: str
    created_at: datetime
    rotated_at: datetime | None


class WebhookDeliveryAttempt(BaseModel):
    id: int
    delivery_id: str
    webhook: str
    """``v<version>.<n>``: the agent file's n-th webhook; ``w<id>``: one added by the CLI."""
    agent_id: str
    session_id: str
    event: str
    url: str
    attempt: int
    outcome: str
    """``delivered``, ``failed`` (retried) or ``rejected`` (the receiver refused it)."""
    status_code: int | None
    error: str | None
    at: datetime


def _client(request: Request) -> VigilClient:
    client: VigilClient = request.app.state.client
    return client


def _triggers(request: Request) -> TriggerService:
    client = _client(request)
    return TriggerService(client.settings, client.db)


def _trigger_info(row: TriggerRow) -> TriggerInfo:
    return TriggerInfo(
        name=row.name,
        agent_id=row.agent_id,
        action=row.action,
        goal_template=row.goal_template,
        message_template=row.message_template,
        key_field=row.key_field,
        created_by=row.created_by,
        created_at=row.created_at,
        rotated_at=row.rotated_at,
    )


def _error(status: int, code: str, message: str) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(code=code, message=message)).model_dump(exclude_none=True)


@router.post(
    "/triggers/{name}",
    response_model=TriggerFired,
    summary="Fire a trigger (signed with its secret; no token)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def fire_trigger(
    name: str,
    request: Request,
    x_vigil_timestamp: Annotated[str | None, Header()] = None,
    x_vigil_signature: Annotated[str | None, Header()] = None,
    x_vigil_delivery: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    service = _triggers(request)
    body = await request.body()
    try:
        row = await service.get(name)
    except NotFound:
        # Answered as a known trigger answers a request not signed with its secret (the
        # same status and words), so that trying names tells none of them.
        refused = signing.check(
            secrets.token_urlsafe(32), x_vigil_timestamp, x_vigil_signature, body
        )
        raise ApiError(401, BAD_SIGNATURE, refused or "the signature does not match") from None
    try:
        refused = service.signature_error(row, x_vigil_timestamp, x_vigil_signature, body)
    except (CredentialError, ConfigError) as exc:
        raise ApiError(503, UNAVAILABLE, f"cannot open the trigger's secret: {exc}") from None
    if refused is not None:
        raise ApiError(401, BAD_SIGNATURE, refused)
    assert x_vigil_timestamp is not None
    try:
        payload = jsonlimits.loads(body, MAX_BODY_DEPTH)
    except jsonlimits.TooDeep:
        raise ApiError(
            400, MALFORMED, f"the body is nested deeper than {MAX_BODY_DEPTH} levels"
        ) from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise ApiError(400, MALFORMED, unreadable_json(exc)) from None
    if not isinstance(payload, dict):
        raise ApiError(422, INVALID, "the body must be a JSON object")
    delivery_id = x_vigil_delivery or signing.body_digest(x_vigil_timestamp, body)
    delivery, mine = await service.claim(row, delivery_id, x_vigil_timestamp, body)
    if not mine:
        if delivery.state != "done" or delivery.result is None:
            raise ApiError(409, CONFLICT, f"delivery {delivery_id!r} is being acted on")
        result = dict(delivery.result)
        if "error" not in result:
            result["replayed"] = True
        return JSONResponse(result, status_code=delivery.status_code or 200)
    try:
        fired = await service.fire(_client(request), row, delivery.delivery_id, payload)
    except Unreachable:
        await service.release(delivery)
        raise
    except VigilError as exc:
        status, code = vigil_status(exc)
        answer = _error(status, code, vigil_message(exc))  # as the API tells it
        await service.finish(delivery, status, answer)
        return JSONResponse(answer, status_code=status)
    except BaseException:
        await service.release(delivery)
        raise
    reply = TriggerFired(**vars(fired))
    await service.finish(delivery, 200, reply.model_dump(mode="json"))
    return reply


class TriggerList(BaseModel):
    items: list[TriggerInfo]


class DeliveryList(BaseModel):
    items: list[WebhookDeliveryAttempt]
    next_after: int | None
    """Pass as ``after`` for the next attempts; null on the last page."""


@router.get("/triggers", response_model=TriggerList, summary="Triggers (never secrets)")
async def list_triggers(request: Request, who: Admin) -> TriggerList:
    return TriggerList(
        items=[_trigger_info(r) for r in await _triggers(request).list_triggers(who.agents)]
    )


@router.get(
    "/webhooks/deliveries",
    response_model=DeliveryList,
    summary="Every attempt to deliver an event to a webhook, oldest first",
)
async def webhook_deliveries(
    request: Request,
    who: Admin,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    session: Annotated[str | None, Query(max_length=MAX_SESSION_ID_CHARS)] = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only attempts past this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    if agent is not None:
        check_agent(who, agent)
    # One more than the page, to know whether another page follows.
    rows = await WebhookService(_client(request).db).deliveries(
        agent_id=agent, session_id=session, agents=who.agents, after_id=after, limit=limit + 1
    )
    page = rows[:limit]
    return DeliveryList(
        items=[WebhookDeliveryAttempt(**vars(r)) for r in page],
        next_after=page[-1].id if len(rows) > limit else None,
    )
