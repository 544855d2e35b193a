"""What routes share: the service layer of the app, and sessions as a token may see them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Request
from pydantic import BaseModel, ConfigDict

from vigil.activities.record.store import SessionRow
from vigil.workers.api.errors import INVALID, ApiError
from vigil.workers.client import UnknownSession, VigilClient
from vigil.workers.tokens import Principal


def client_of(request: Request) -> VigilClient:
    client: VigilClient = request.app.state.client
    return client


Client = Annotated[VigilClient, Depends(client_of)]


class RequestBody(BaseModel):
    """A JSON request body whose unknown fields are refused (422): a misspelt field
    (``budgett``, ``max_stepz``) silently dropped would run with the defaults instead.

    Its number and boolean fields are ``strict=True``, as every request body's: a bool
    where a number is expected, a string where a number or a bool is, a number where a
    bool is, is a 422 naming the field, never coerced (``true`` as 1, ``"yes"`` as true);
    an integer is still a float's value. tests/unit/test_api_body_types.py holds every
    route's body to it."""

    model_config = ConfigDict(extra="forbid")


MAX_SESSION_ID_CHARS = 256
"""No session's id is longer: a caller chooses at most 200 characters, and a schedule's
runs are its id (at most 200) with ``-run-`` and a time. A longer id is a 422 at once,
before the record or Temporal is asked (Temporal takes seconds to refuse a huge one)."""

SessionId = Annotated[
    str, Path(min_length=1, max_length=MAX_SESSION_ID_CHARS, description="The session's id")
]
"""The session id of every route that takes one."""


def may_know_of(who: Principal) -> Callable[[str | None], bool]:
    """Whether ``who`` may learn anything of a session of an agent (None: an agent
    Temporal does not name, for a session not recorded yet): a token scoped to some agents
    only of theirs."""
    return lambda agent_id: (
        who.agents is None or (agent_id is not None and who.sees_agent(agent_id))
    )


async def visible_session(client: VigilClient, who: Principal, session_id: str) -> SessionRow:
    """The session's record row; 404 when there is none or the token's agents do not
    cover its agent (answered as if absent, so ids do not leak: a session not recorded
    yet, or one no worker takes, says so only to whoever may know of its agent)."""
    row = await client.require_session(session_id, visible=may_know_of(who))
    if not who.sees_agent(row.agent_id):
        raise UnknownSession(f"no session with id {session_id!r}")
    return row


async def no_body(request: Request) -> None:
    """For a route that takes no body: one sent is refused (422), never dropped unread. An
    empty JSON object says nothing either, and is taken (a client that sends ``{}`` to
    every control, as the README's resume does)."""
    sent = (await request.body()).strip()
    if sent and re.fullmatch(rb"\{\s*\}", sent) is None:
        raise ApiError(
            422, INVALID, f"{request.method} {request.url.path} takes no body; send none"
        )
