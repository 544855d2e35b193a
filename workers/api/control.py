"""Acting on a running session: approve, reject, pause, resume, message, redirect, wake.

Each is the session's validated update, sent by the client as the CLI sends it, with the
token's owner as ``by`` (the actor the record keeps). A refusal (an unknown approval id,
a resume of a session that is not paused, an ended session) is 409 with the session's own
reason. The answer holds the session's state after the action.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from vigil.schema.payloads import MAX_HUMAN_TEXT, Ack, SessionState
from vigil.workers.api.auth import Controller
from vigil.workers.api.deps import Client, RequestBody, SessionId, no_body, visible_session
from vigil.workers.client import STATE_QUERY_SECONDS, VigilClient, VigilError
from vigil.workers.tokens import Scope

router = APIRouter(tags=["control"])

ApprovalId = Field(min_length=1, max_length=200)


class ApproveRequest(RequestBody):
    approval_id: str = ApprovalId
    note: str | None = Field(default=None, max_length=MAX_HUMAN_TEXT)
    edited_arguments: dict[str, Any] | None = None
    """Run the call with these arguments instead (checked against the tool's schema; a lone
    surrogate in them is refused with every JSON body's, workers/api/limits.py)."""
    digest: str | None = Field(default=None, max_length=200)
    """The digest of the call being approved (from the approvals inbox), to be sure the
    approval holds for exactly that call."""


class RejectRequest(RequestBody):
    approval_id: str = ApprovalId
    reason: str = Field(default="", max_length=MAX_HUMAN_TEXT)


class ReasonRequest(RequestBody):
    reason: str = Field(default="", max_length=MAX_HUMAN_TEXT)


class MessageRequest(RequestBody):
    text: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)


class RedirectRequest(RequestBody):
    goal: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)
    agent_version: int | None = Field(default=None, ge=1, le=2**31 - 1, strict=True)
    """Also move the session to this version of its agent's definition."""


class ControlResult(BaseModel):
    accepted: bool
    message: str
    """What the session said (e.g. ``approved a1-0``)."""
    state: SessionState | None
    """The session's state after the action; null when it has ended meanwhile or no
    worker answered in time."""
    queued: bool = False
    """No worker answered in time: the request was left with Temporal as a signal in the
    session's history, and the session takes it once a worker runs it (``accepted`` is
    false until then)."""


async def _act(
    client: VigilClient, session_id: str, action: Awaitable[Ack | None]
) -> ControlResult:
    ack = await action
    assert ack is not None  # sent as an update: the session acknowledged it, or it is queued
    if ack.queued:
        return ControlResult(accepted=False, message=ack.message, state=None, queued=True)
    state = None
    with contextlib.suppress(VigilError, TimeoutError):
        state = await asyncio.wait_for(client.state(session_id), STATE_QUERY_SECONDS)
    return ControlResult(accepted=ack.accepted, message=ack.message, state=state)


@router.post(
    "/sessions/{session_id}/approve",
    response_model=ControlResult,
    summary="Approve a pending tool call (optionally with edited arguments)",
)
async def approve(
    session_id: SessionId, body: ApproveRequest, who: Controller, client: Client
) -> ControlResult:
    await visible_session(client, who, session_id)
    return await _act(
        client,
        session_id,
        client.approve(
            session_id,
            body.approval_id,
            by=who.actor,
            note=body.note,
            edited_arguments=body.edited_arguments,
            digest=body.digest,
        ),
    )


@router.post(
    "/sessions/{session_id}/reject", response_model=ControlResult, summary="Reject a tool call"
)
async def reject(
    session_id: SessionId, body: RejectRequest, who: Controller, client: Client
) -> ControlResult:
    await visible_session(client, who, session_id)
    return await _act(
        client,
        session_id,
        client.reject(session_id, body.approval_id, by=who.actor, reason=body.reason),
    )


@router.post(
    "/sessions/{session_id}/pause",
    response_model=ControlResult,
    summary="Pause before the next model call",
)
async def pause(
    session_id: SessionId, who: Controller, client: Client, body: ReasonRequest | None = None
) -> ControlResult:
    await visible_session(client, who, session_id)
    reason = body.reason if body else ""
    return await _act(client, session_id, client.pause(session_id, by=who.actor, reason=reason))


@router.post(
    "/sessions/{session_id}/resume", response_model=ControlResult, summary="Resume a paused session"
)
async def resume(
    session_id: SessionId,
    who: Controller,
    client: Client,
    _body: Annotated[None, Depends(no_body)],  # after the token's check
) -> ControlResult:
    await visible_session(client, who, session_id)
    return await _act(client, session_id, client.resume(session_id, by=who.actor))


@router.post(
    "/sessions/{session_id}/message",
    response_model=ControlResult,
    summary="Say something to the agent (it reads it before its next step)",
)
async def message(
    session_id: SessionId, body: MessageRequest, who: Controller, client: Client
) -> ControlResult:
    await visible_session(client, who, session_id)
    return await _act(client, session_id, client.say(session_id, body.text, by=who.actor))


@router.post(
    "/sessions/{session_id}/redirect", response_model=ControlResult, summary="Give a new goal"
)
async def redirect(
    session_id: SessionId, body: RedirectRequest, who: Controller, client: Client
) -> ControlResult:
    await visible_session(client, who, session_id)
    return await _act(
        client,
        session_id,
        client.redirect(
            session_id,
            body.goal,
            by=who.actor,
            agent_version=body.agent_version,
            may_loosen=who.may(Scope.ADMIN),
        ),
    )


@router.post(
    "/sessions/{session_id}/wake", response_model=ControlResult, summary="Wake a sleeping session"
)
async def wake(
    session_id: SessionId, who: Controller, client: Client, body: ReasonRequest | None = None
) -> ControlResult:
    await visible_session(client, who, session_id)
    reason = body.reason if body else ""
    return await _act(client, session_id, client.wake(session_id, by=who.actor, reason=reason))
