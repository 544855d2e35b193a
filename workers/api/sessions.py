"""Sessions: start, list (filters, cursor paging), show, transcript, events, export, cancel.

Reads of a session whose agent the token does not cover answer 404, as if it were absent;
starting a session of such an agent is 403. Starting checks what `vigil start` checks
(sizes, the agent's definition, a taken id) through the same client call.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from vigil.activities.record.archived import archived_transcript
from vigil.activities.record.store import SessionRow, StoredMessage
from vigil.schema.limits import MAX_BUDGET_COUNT, MAX_BUDGET_SECONDS
from vigil.schema.payloads import MAX_HUMAN_TEXT, Budget, SessionState, SessionStatus, ToolPolicy
from vigil.workers.api.auth import Controller, Reader, check_agent
from vigil.workers.api.deps import Client, RequestBody, SessionId, visible_session
from vigil.workers.api.errors import CONFLICT, UNAVAILABLE, ApiError
from vigil.workers.client import (
    MAX_RECENT_MESSAGES,
    UNRECORDED,
    NotRecordedYet,
    NoWorker,
    SessionIdTaken,
    UnknownSession,
    VigilClient,
)
from vigil.workers.inputs import SESSION_ID, check_session_id
from vigil.workers.tokens import Scope

router = APIRouter(tags=["sessions"])

MAX_PAGE = 500


class StartBudget(RequestBody):
    """Limits that override the agent definition's (only those given). Each is a JSON
    number: ``true`` or ``"5"`` is a 422, never a budget of 1 or 5 (an integer is a
    number for the cost and the seconds too)."""

    model_config = ConfigDict(allow_inf_nan=False)

    max_steps: int | None = Field(default=None, ge=1, le=MAX_BUDGET_COUNT, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_BUDGET_COUNT, strict=True)
    max_cost_usd: float | None = Field(default=None, gt=0, strict=True)
    max_seconds: float | None = Field(default=None, gt=0, le=MAX_BUDGET_SECONDS, strict=True)
    """At most 100 years."""


class StartOptions(RequestBody):
    """How a session starts, beyond its agent and goal (as `vigil start`'s options)."""

    agent_version: int | None = Field(default=None, ge=1, le=2**31 - 1, strict=True)
    """That version of the agent's definition (the newest by default)."""
    system_prompt: str | None = Field(default=None, max_length=2 * MAX_HUMAN_TEXT)
    budget: StartBudget | None = None
    approve_tools: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    """Tools whose calls wait for a person's approval (the policy's default otherwise)."""
    allow_tools: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None

    def start_kwargs(self) -> dict[str, Any]:
        budget = self.budget.model_dump(exclude_none=True) if self.budget else {}
        return {
            "budget": Budget(**budget),
            "policy": ToolPolicy(require_approval=self.approve_tools, allowed=self.allow_tools),
            "system_prompt": self.system_prompt,
            "agent_version": self.agent_version,
        }


class StartRequest(StartOptions):
    agent: str = Field(min_length=1, max_length=200)
    goal: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)
    id: str | None = Field(default=None, min_length=1, max_length=200)
    """The session's id (a new one by default): letters, digits and ``. _ : -``, starting
    with a letter or digit. An id names one session for good, whatever its agent."""
    if_exists: Literal["fail", "return"] = "fail"
    """With an ``id`` that names a session already: ``fail`` (409), or ``return`` it
    (200, ``created`` false) when it is the same agent's with the same goal, as a start
    sent again after its answer was lost expects; another agent's or goal's is a 409."""


class Started(BaseModel):
    id: str
    ui: str | None
    """The session in Temporal's UI, when known."""
    created: bool = True
    """False: ``if_exists: return`` answered the session the id already named."""
    status: str | None = None
    """That session's recorded status (only when ``created`` is false)."""


class SessionItem(BaseModel):
    id: str
    agent_id: str
    goal: str
    status: str
    step: int
    created_at: datetime
    updated_at: datetime
    schedule_id: str | None
    temporal_status: str | None


class SessionList(BaseModel):
    items: list[SessionItem]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last page."""


class SessionRecord(BaseModel):
    id: str
    agent_id: str
    goal: str
    status: str
    step: int
    run_count: int
    schedule_id: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    summary: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    metadata: dict[str, Any]
    agent_version: int | None = None
    """The version of the agent's definition the session runs (a redirect moves it);
    null for an agent without a definition."""


class Message(BaseModel):
    seq: int
    role: str
    name: str | None
    content: str
    tool_calls: list[dict[str, Any]] | None
    tool_call_id: str | None
    step: int
    created_at: datetime


class ArchivedOut(BaseModel):
    """Where a session's messages and events went when it was archived and pruned."""

    uri: str
    """The archive object in the object store."""
    archived_at: datetime | None
    messages: int
    events: int
    restore: str
    """The command that brings them back into the record."""


class SessionDetail(BaseModel):
    session: SessionRecord
    state: SessionState | None
    """Live state from the running session; null once it ended or when no worker answered."""
    messages: list[Message]
    """The most recent messages, oldest first."""
    ui: str | None
    archived: ArchivedOut | None = None
    """Set when the transcript was archived and pruned (``messages`` is then empty)."""
    retrying: list[str] = []
    """Calls Temporal tries again for the running session, each with its attempt and the
    last attempt's failure (a part away, a worker that cannot serve the call)."""


class Transcript(BaseModel):
    items: list[Message]
    next_after_seq: int | None
    """Pass as ``after_seq`` for the next page; null when no message follows this page."""
    archived: ArchivedOut | None = None
    """Set when the transcript was archived and pruned (no page holds its messages)."""


class Event(BaseModel):
    id: int
    key: str
    kind: str
    step: int
    actor: str | None
    reason: str | None
    payload: dict[str, Any]
    created_at: datetime


class Events(BaseModel):
    items: list[Event]
    next_after: int | None
    """Pass as ``after`` for the next page; null when no event follows this page."""
    archived: ArchivedOut | None = None
    """Set when the transcript was archived and pruned (its events went with it)."""


class CancelRequest(RequestBody):
    reason: str = Field(default="", max_length=MAX_HUMAN_TEXT)


class Cancelled(BaseModel):
    id: str
    accepted: bool
    status: str
    """The recorded status when the cancel was sent (it becomes ``cancelled``);
    ``unrecorded`` when no worker had recorded the session yet."""


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    MARKDOWN = "markdown"
    MD = "md"
    """Markdown, as ``vigil export -f md`` spells it."""


def record_of(row: SessionRow) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        agent_id=row.agent_id,
        goal=row.goal,
        status=row.status,
        step=row.step,
        run_count=row.run_count,
        schedule_id=row.schedule_id,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cost_usd=row.cost_usd,
        summary=row.summary,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        metadata=row.metadata,
        agent_version=row.agent_version,
    )


def message_of(m: StoredMessage) -> Message:
    return Message(
        seq=m.seq,
        role=m.role,
        name=m.name,
        content=m.content,
        tool_calls=m.tool_calls,
        tool_call_id=m.tool_call_id,
        step=m.step,
        created_at=m.created_at,
    )


@router.post(
    "/sessions",
    response_model=Started,
    status_code=201,
    summary="Start a session",
    responses={200: {"model": Started, "description": "The session the id already names"}},
)
async def start_session(
    body: StartRequest, who: Controller, client: Client
) -> Started | JSONResponse:
    check_agent(who, body.agent)
    check_session_id(body.id)
    try:
        started = await client.start_session(
            body.agent,
            body.goal,
            session_id=body.id,
            may_loosen=who.may(Scope.ADMIN),
            sees_agent=who.sees_agent,
            **body.start_kwargs(),
        )
    except SessionIdTaken as exc:
        # Ids are one namespace across agents: a token that cannot read the session holding
        # the id learns only that it is taken, never its status (reads of it are 404).
        mine = exc.agent_id is not None and who.sees_agent(exc.agent_id)
        if body.if_exists == "return" and mine and exc.agent_id == body.agent:
            return await _existing(client, exc, body.goal)
        raise ApiError(409, CONFLICT, exc.message(reveal=mine)) from None
    return Started(id=started.id, ui=started.ui_url)


async def _existing(client: VigilClient, taken: SessionIdTaken, goal: str) -> JSONResponse:
    """The session an ``if_exists: return`` start names, when it has the start's goal."""
    if taken.erased:
        raise ApiError(409, CONFLICT, taken.message(reveal=True))
    sid = taken.session_id
    try:
        status = (await client.require_session(sid)).status
    except NotRecordedYet:  # started, no worker has taken its first step yet
        status = SessionStatus.RUNNING.value
    except UnknownSession:  # ended before anything was recorded: the id is just taken
        raise ApiError(409, CONFLICT, taken.message(reveal=True)) from None
    # The goal it was started with: a redirect since changes the record's, not this one.
    if await client.first_goal(sid) != goal:
        raise ApiError(
            409,
            CONFLICT,
            f"a session with id {sid!r} already exists with another goal; choose another id",
        )
    found = Started(id=sid, ui=client.ui_link(sid), created=False, status=status)
    return JSONResponse(found.model_dump(), status_code=200)


@router.get("/sessions", response_model=SessionList, summary="Sessions, newest first")
async def list_sessions(
    who: Reader,
    client: Client,
    agent: Annotated[str | None, Query(max_length=200)] = None,
    status: SessionStatus | None = None,
    since: datetime | None = None,
    schedule: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> SessionList:
    if agent is not None:
        check_agent(who, agent)
    page = await client.session_page(
        agent=agent,
        agents=who.agents,
        status=status.value if status else None,
        since=since,
        schedule_id=schedule,
        limit=limit,
        cursor=cursor,
    )
    return SessionList(
        items=[SessionItem(**vars(s)) for s in page.items], next_cursor=page.next_cursor
    )


@router.get("/sessions/{session_id}", response_model=SessionDetail, summary="A session")
async def show_session(
    session_id: SessionId,
    who: Reader,
    client: Client,
    last: Annotated[int, Query(ge=0, le=MAX_RECENT_MESSAGES)] = 20,
) -> SessionDetail:
    await visible_session(client, who, session_id)
    view = await client.session_view(session_id, last)
    return SessionDetail(
        session=record_of(view.session),
        state=view.state,
        messages=[message_of(m) for m in view.messages],
        ui=view.ui,
        archived=_archived(view.session),
        retrying=view.retrying,
    )


@router.get(
    "/sessions/{session_id}/transcript",
    response_model=Transcript,
    summary="A session's messages by seq, one page",
)
async def transcript(
    session_id: SessionId,
    who: Reader,
    client: Client,
    after_seq: Annotated[int, Query(ge=-1, le=2**31 - 1)] = -1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Transcript:
    row = await visible_session(client, who, session_id)
    page, after = await client.transcript_page(session_id, after_seq=after_seq, limit=limit)
    return Transcript(
        items=[message_of(m) for m in page], next_after_seq=after, archived=_archived(row)
    )


@router.get(
    "/sessions/{session_id}/events",
    response_model=Events,
    summary="A session's events (approvals, human actions, ...), one page",
)
async def events(
    session_id: SessionId,
    who: Reader,
    client: Client,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> Events:
    row = await visible_session(client, who, session_id)
    # One more than the page, to know whether another page follows.
    rows = await client.events_page(session_id, after=after, limit=limit + 1, kind=kind)
    page = rows[:limit]
    return Events(
        items=[Event(**vars(e)) for e in page],
        next_after=page[-1].id if len(rows) > limit else None,
        archived=_archived(row),
    )


def _archived(row: SessionRow) -> ArchivedOut | None:
    """Where the session's transcript went, when it was archived and pruned."""
    found = archived_transcript(row.metadata)
    return None if found is None else ArchivedOut(**found.shown(row.id))


@router.get(
    "/sessions/{session_id}/export",
    summary="The whole session, streamed as JSON Lines or Markdown",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The export",
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "text/markdown": {"schema": {"type": "string"}},
            },
        }
    },
)
async def export(
    request: Request,
    session_id: SessionId,
    who: Reader,
    client: Client,
    format: ExportFormat = ExportFormat.JSONL,
) -> StreamingResponse:
    await visible_session(client, who, session_id)
    fmt = "jsonl" if format == ExportFormat.JSONL else "md"
    slot = _export_slot(request, client.settings.api_db_pool_size)
    chunks = client.export(session_id, fmt)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk.encode("utf-8")
        finally:
            slot.give_back()

    stream = body()
    # Given back too when the stream is never read (its client left before it began).
    weakref.finalize(stream, slot.give_back)

    media = "application/x-ndjson" if fmt == "jsonl" else "text/markdown; charset=utf-8"
    return StreamingResponse(
        stream,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{_file_stem(session_id)}.{fmt}"'},
    )


@dataclass
class _OpenExports:
    count: int = 0


@dataclass
class _ExportSlot:
    """One export's place among those streaming, given back once (its end, or its
    stream dropped unread)."""

    exports: _OpenExports
    held: bool = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.exports.count -= 1


def _export_slot(request: Request, pool_size: int) -> _ExportSlot:
    """A place among the exports streaming now; refused (503) when half the API's
    PostgreSQL connections stream exports already: each holds one until its client has
    read it all, and clients that stop reading would otherwise hold them all (every other
    request then waited for a connection and failed). Taken here, before the response
    begins, so a burst of exports cannot all pass the check at once."""
    state = request.app.state
    if not hasattr(state, "open_exports"):
        state.open_exports = _OpenExports()
    exports: _OpenExports = state.open_exports
    most = max(1, pool_size // 2)
    if exports.count >= most:
        raise ApiError(
            503,
            UNAVAILABLE,
            f"the API streams {exports.count} exports, the most it may at once (half of "
            "VIGIL_API_DB_POOL_SIZE): try again later",
        )
    exports.count += 1
    return _ExportSlot(exports)


def _file_stem(session_id: str) -> str:
    """The export's file name: its session's id, when it is one vigil's faces take (no
    quote or line break: one a plain Temporal start chose may hold them), else session."""
    return session_id if SESSION_ID.fullmatch(session_id) else "session"


@router.post("/sessions/{session_id}/cancel", response_model=Cancelled, summary="Cancel a session")
async def cancel(
    session_id: SessionId, who: Controller, client: Client, body: CancelRequest | None = None
) -> Cancelled:
    """Temporal's cancel; the record's cancel event names the token's owner and the reason.
    A session no worker has recorded yet (none may poll its queue) is cancelled too, as
    `vigil cancel` does it: Temporal keeps the cancel, and the session ends cancelled once
    a worker takes it (``status``: ``unrecorded``)."""
    try:
        status = (await visible_session(client, who, session_id)).status
    except (NotRecordedYet, NoWorker):
        # Raised only for a session the token may know of (visible_session asks first).
        status = UNRECORDED
    await client.cancel(session_id, by=who.actor, reason=body.reason if body else "")
    return Cancelled(id=session_id, accepted=True, status=status)
