"""An agent's long-term memory: hybrid search, add, a subject's history, forget (as
`vigil memory ...`).

Forgetting keeps the memory for history (who forgot it, when, why) and takes it out of
every recall; erasure (`vigil erase`) is what removes rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from vigil.activities.memory.store import MAX_AGENT_ID, MAX_KIND, MAX_SUBJECT, Forgotten
from vigil.schema.payloads import MAX_HUMAN_TEXT
from vigil.workers.api.auth import Admin, Controller, Reader, check_agent
from vigil.workers.api.deps import RequestBody
from vigil.workers.api.errors import INVALID, ApiError
from vigil.workers.client import MAX_MEMORY_ID, MAX_RECALL, VigilClient
from vigil.workers.tokens import Scope

router = APIRouter(tags=["memory"])

AgentId = Annotated[str, Path(min_length=1, max_length=MAX_AGENT_ID)]
MemoryId = Annotated[int, Path(ge=1, le=MAX_MEMORY_ID)]


class MemoryHit(BaseModel):
    id: int
    kind: str
    subject: str | None
    content: str
    importance: float
    created_at: datetime
    score: float
    """Fused relevance x recency x importance; higher is better."""
    superseded: bool
    vector_rank: int | None
    text_rank: int | None
    similarity: float | None


class MemorySearch(BaseModel):
    items: list[MemoryHit]


class MemoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)
    kind: str = Field(default="fact", min_length=1, max_length=MAX_KIND)
    """``fact``, ``reflection`` or ``lesson`` (anything else is a 422, as in search)."""
    subject: str | None = Field(default=None, max_length=MAX_SUBJECT)
    """What it is about: a new memory about the same subject supersedes the old one."""
    importance: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False, strict=True)
    """A JSON number from 0 to 1 (``true`` or ``"0.5"`` is a 422)."""


class MemoryAdded(BaseModel):
    id: int
    """The new memory, or the one a near-duplicate was merged into."""
    action: Literal["inserted", "merged", "superseded"]
    superseded_ids: list[int]
    similarity: float | None
    redactions: dict[str, int]


class MemoryOut(BaseModel):
    id: int
    agent_id: str
    kind: str
    subject: str | None
    content: str
    importance: float
    source_session_id: str | None
    superseded_by: int | None
    superseded_at: datetime | None
    created_at: datetime
    forgotten_at: datetime | None
    forgotten_by: str | None
    forget_reason: str | None
    metadata: dict[str, Any]


class MemoryForgotten(MemoryOut):
    restored_ids: list[int]
    """The memories it had superseded, current again now that it is forgotten."""


MAX_HISTORY = 1000
"""The most versions of a subject one page of its history holds."""


def _client(request: Request) -> VigilClient:
    client: VigilClient = request.app.state.client
    return client


@router.get(
    "/agents/{agent_id}/memory/search",
    response_model=MemorySearch,
    summary="Hybrid search (vector + full text) of an agent's memory",
)
async def search_memory(
    request: Request,
    agent_id: AgentId,
    who: Reader,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="What to recall")],
    kind: Annotated[str | None, Query(min_length=1, max_length=MAX_KIND)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RECALL)] = 10,
    include_superseded: bool = False,
) -> MemorySearch:
    check_agent(who, agent_id)
    found = await _client(request).memory_search(
        agent_id,
        q,
        k=limit,
        include_superseded=include_superseded,
        kinds=[kind] if kind is not None else None,
    )
    return MemorySearch(items=[MemoryHit.model_validate(m, from_attributes=True) for m in found])


@router.post(
    "/agents/{agent_id}/memory",
    response_model=MemoryAdded,
    status_code=201,
    summary="Add a memory (merged into a near-duplicate, or superseding one on its subject)",
)
async def add_memory(
    request: Request, agent_id: AgentId, body: MemoryCreate, who: Controller
) -> MemoryAdded:
    check_agent(who, agent_id)
    result = await _client(request).memory_add(
        agent_id, body.content, kind=body.kind, subject=body.subject, importance=body.importance
    )
    return MemoryAdded(
        id=result.id,
        action=result.action,
        superseded_ids=list(result.superseded_ids),
        similarity=result.similarity,
        redactions=dict(result.redactions),
    )


class MemoryHistory(BaseModel):
    items: list[MemoryOut]
    """Oldest first: the newest ``limit`` versions (before ``before``, when given)."""
    next_before: int | None
    """Older versions remain: ask again with ``before`` set to this (None: none remain)."""


@router.get(
    "/agents/{agent_id}/memory/history",
    response_model=MemoryHistory,
    summary="What an agent knew about a subject over time, oldest first",
    description=(
        "Every memory of the agent about the subject (compared in Unicode's NFKC form, "
        "without case), each superseded by the next. Forgotten ones are listed to an "
        "admin token only (with who forgot them and why), as only an admin forgets: "
        "to other tokens a forgotten memory is gone, as in search. A page holds the "
        "newest `limit` versions; `next_before` asks for the older ones."
    ),
)
async def memory_history(
    request: Request,
    agent_id: AgentId,
    who: Reader,
    subject: Annotated[str, Query(min_length=1, max_length=MAX_SUBJECT)],
    kind: Annotated[str | None, Query(min_length=1, max_length=MAX_KIND)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_MEMORY_ID)] = None,
) -> MemoryHistory:
    check_agent(who, agent_id)
    # Forgotten memories are an admin's to see: left out of the page, and of its cursor.
    page = await _client(request).memory_history(
        agent_id,
        subject,
        kind=kind,
        limit=limit,
        before=before,
        include_forgotten=who.may(Scope.ADMIN),
    )
    return MemoryHistory(
        items=[MemoryOut.model_validate(m, from_attributes=True) for m in page.items],
        next_before=page.next_before,
    )


class ForgetRequest(RequestBody):
    reason: str | None = Field(default=None, max_length=1000)
    """Why it is forgotten (as the ``reason`` query parameter; either may give it)."""


@router.delete(
    "/agents/{agent_id}/memory/{memory_id}",
    response_model=MemoryForgotten,
    summary="Forget a memory (admin): kept for history, never recalled again",
    description=(
        "The memories it had superseded are current again (restored_ids). 404 for a memory "
        "the agent does not have or that is already forgotten."
    ),
)
async def forget_memory(
    request: Request,
    agent_id: AgentId,
    memory_id: MemoryId,
    who: Admin,
    reason: Annotated[str | None, Query(max_length=1000)] = None,
    body: ForgetRequest | None = None,
) -> MemoryForgotten:
    check_agent(who, agent_id)
    if body is not None and body.reason is not None:
        if reason is not None and reason != body.reason:
            raise ApiError(422, INVALID, "the reason is given twice (query and body), unalike")
        reason = body.reason
    done: Forgotten = await _client(request).memory_forget(
        agent_id, memory_id, by=who.actor, reason=reason
    )
    out = MemoryOut.model_validate(done.record, from_attributes=True)
    return MemoryForgotten(**out.model_dump(), restored_ids=list(done.restored_ids))
