"""``POST /agents/{name}/keys/{key}/messages``: a message to the session of a key,
starting it when it does not run yet, in one atomic call (workers/keyed.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from vigil.schema.limits import MAX_BUDGET_SECONDS
from vigil.schema.payloads import MAX_HUMAN_TEXT, SessionStatus
from vigil.workers.api import urls as _urls  # noqa: F401 - {x:text} in the paths below
from vigil.workers.api.auth import Controller, check_agent
from vigil.workers.api.deps import Client
from vigil.workers.api.sessions import StartOptions
from vigil.workers.keyed import MAX_KEY, message_by_key
from vigil.workers.tokens import Scope

router = APIRouter(tags=["sessions"])


class KeyedMessageRequest(StartOptions):
    text: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)
    goal: str | None = Field(default=None, min_length=1, max_length=MAX_HUMAN_TEXT)
    """The goal of the session if this message starts it (a default names the key)."""
    conversation_idle_seconds: float | None = Field(
        default=None, gt=0, le=MAX_BUDGET_SECONDS, strict=True
    )
    """If this message starts the session: how long it waits for each next message before
    it ends completed (the agent definition's ``conversation_idle_seconds`` otherwise)."""


class KeyedMessageResult(BaseModel):
    session_id: str
    """The key's session (the same id for every message to this agent and key)."""
    accepted: bool
    message: str
    status: SessionStatus
    follows: str | None = None
    """The key's session that had ended, when this message started the key's next one."""
    started: bool | None = None
    """Whether this message started the key's session; asked only when the body carries
    options that shape a new session (null otherwise)."""
    not_taken: list[str] = []
    """The body's start options the session did not take, because it was running already
    and keeps its own (empty when this message started it)."""
    queued: bool = False
    """The message was left with Temporal as a signal (no worker polls the queue, or none
    answered in time): in the session's history, taken once a worker runs it."""


@router.post(
    # The key is everything between keys/ and /messages: a key may hold a slash (%2F).
    "/agents/{name}/keys/{key:text}/messages",
    response_model=KeyedMessageResult,
    summary="Message the session of a key, starting it if it does not run",
)
async def message_key(
    name: Annotated[str, Path(min_length=1, max_length=200)],
    key: Annotated[str, Path(min_length=1, max_length=MAX_KEY)],
    body: KeyedMessageRequest,
    who: Controller,
    client: Client,
) -> KeyedMessageResult:
    check_agent(who, name)
    # Options that shape a new session only: a running one keeps its own, said so.
    for_a_start = sorted(
        field for field in body.model_fields_set - {"text"} if getattr(body, field) is not None
    )
    start = body.start_kwargs()
    if body.conversation_idle_seconds is not None:
        start["conversation_idle_seconds"] = body.conversation_idle_seconds
    sent = await message_by_key(
        client,
        name,
        key,
        body.text,
        by=who.actor,
        goal=body.goal,
        may_loosen=who.may(Scope.ADMIN),
        sees_agent=who.sees_agent,
        tell_started=bool(for_a_start),
        **start,
    )
    started = sent.started if for_a_start else None
    return KeyedMessageResult(
        session_id=sent.session_id,
        accepted=sent.ack.accepted,
        message=sent.ack.message,
        status=sent.ack.status,
        follows=sent.follows,
        started=started,
        not_taken=for_a_start if started is False else [],
        queued=sent.queued,
    )
