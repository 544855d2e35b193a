"""The approvals inbox: every tool call waiting for a person, across running sessions.

Read from the record (workers/client.py ``pending_approvals``), not by asking each
session: an approval requested and not yet decided, in a session that has not ended,
oldest first, with the exact tool name and the arguments as the model sent them. Paged as
the sessions list is (``limit``, ``cursor``, ``next_cursor``): a page starts after the
last approval of the one before, so approvals decided meanwhile never shift a page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from vigil.schema import jsonlimits
from vigil.schema.jsonlimits import MAX_ARGUMENT_DEPTH
from vigil.workers.api.auth import Reader, check_agent
from vigil.workers.api.deps import Client
from vigil.workers.api.sessions import MAX_PAGE

router = APIRouter(tags=["approvals"])


class PendingApproval(BaseModel):
    session_id: str
    agent_id: str
    approval_id: str
    """Approve or reject with this id: ``POST /v1/sessions/{session_id}/approve``."""
    step: int
    tool: str
    arguments: Any
    """The call's arguments as JSON (null when the model's text is not JSON)."""
    arguments_json: str
    """The arguments exactly as the model sent them."""
    digest: str | None
    """What the approval is bound to: the digest of the tool name and arguments."""
    requested_at: datetime


class Approvals(BaseModel):
    items: list[PendingApproval]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (newer) page; null on the last page."""


def _parsed(text: str) -> Any:
    try:
        return jsonlimits.loads(text, MAX_ARGUMENT_DEPTH)
    except ValueError:
        return None


@router.get("/approvals", response_model=Approvals, summary="Pending approvals, oldest first")
async def approvals(
    who: Reader,
    client: Client,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 200,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Approvals:
    if agent is not None:
        check_agent(who, agent)
    page = await client.pending_approvals(
        agent=agent, agents=who.agents, limit=limit, cursor=cursor
    )
    return Approvals(
        items=[
            PendingApproval(
                session_id=r.session_id,
                agent_id=r.agent_id,
                approval_id=r.approval_id,
                step=r.step,
                tool=r.tool,
                arguments=_parsed(r.arguments),
                arguments_json=r.arguments,
                digest=r.digest,
                requested_at=r.requested_at,
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )
