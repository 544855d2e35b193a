"""Recurring goals: ``/schedules`` (as `vigil schedule ...`).

Creating one needs an admin token; pausing, resuming and triggering a control token;
reading a read token. A schedule of an agent the token does not cover is answered as if
absent (404), so schedule ids do not leak across agents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from vigil.schema.payloads import MAX_HUMAN_TEXT
from vigil.workers import inputs
from vigil.workers.api.auth import Admin, Controller, Reader, check_agent
from vigil.workers.api.deps import no_body
from vigil.workers.api.sessions import MAX_PAGE, SessionItem
from vigil.workers.client import UnknownSchedule, VigilClient
from vigil.workers.schedules import ScheduleService, ScheduleView
from vigil.workers.tokens import Principal

router = APIRouter(tags=["schedules"])

ScheduleId = Annotated[
    str,
    # Any id a schedule may have had (ids of 176-200 characters were taken before their
    # runs' ids were known not to fit), so such a schedule can still be seen and deleted.
    Path(pattern=inputs.SESSION_ID.pattern, max_length=200, description="The schedule's id"),
]
Duration = Annotated[str, Field(min_length=1, max_length=40, examples=["15m", "6h", "1d"])]


class ScheduleCreate(BaseModel):
    """A recurring goal: each run is a session of ``agent`` with this goal."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=inputs.SCHEDULE_ID.pattern, max_length=inputs.MAX_SCHEDULE_ID)
    agent: str = Field(min_length=1, max_length=200)
    goal: str = Field(min_length=1, max_length=MAX_HUMAN_TEXT)
    cron: str | None = Field(default=None, max_length=200, examples=["0 9 * * MON-FRI"])
    """A cron expression; give it or ``every``."""
    every: Duration | None = None
    """An interval (``90s``, ``15m``, ``6h``, ``1d``); give it or ``cron``."""
    time_zone: str | None = Field(default=None, max_length=100, examples=["Europe/Paris"])
    jitter: Duration | None = None
    catchup: Duration | None = None
    overlap: inputs.OverlapName = "skip"
    paused: bool = Field(default=False, strict=True)
    """A JSON boolean: ``"yes"`` or ``1`` is a 422, never a paused schedule."""
    agent_version: int | None = Field(default=None, ge=1, le=2**31 - 1, strict=True)
    """Pin this version of the agent; each run takes the newest otherwise."""
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    require_approval: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=100
    )
    note: str | None = Field(default=None, max_length=1000)
    """One line of text, without NUL (as every note, reason and goal)."""

    @field_validator("note")
    @classmethod
    def _note_without_nul(cls, note: str | None) -> str | None:
        # As line_text_error (schema/limits.py) refuses it in a control's note or reason:
        # a 422 naming the field, rather than a note Temporal keeps and the record cannot.
        if note is not None and "\x00" in note:
            raise PydanticCustomError("string_nul", "must not contain NUL characters")
        return note


class ScheduleOut(BaseModel):
    id: str
    agent_id: str
    goal: str
    agent_version: int | None
    cron: str | None
    every_seconds: float | None
    time_zone: str | None
    overlap: str
    paused: bool
    note: str
    next_runs: list[datetime]
    runs_started: int
    """Runs started so far (by its timing, triggers and backfills)."""
    skipped_overlap: int
    """Runs not started because an earlier one still ran (its overlap policy)."""
    missed_catchup: int
    """Runs not started within the catch-up window (the server was down longer)."""
    running: list[str]
    """The sessions of its runs that still run."""
    buffered: int
    """Runs waiting to start once the running one ends (overlap buffer_one, buffer_all)."""
    jitter_seconds: float | None
    catchup_seconds: float | None
    max_steps: int | None
    """Each run's step budget; null: the agent's."""
    require_approval: list[str] | None
    """The tools whose calls wait for a person; null: the agent's rules."""
    created_at: datetime | None


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


class ScheduleDone(BaseModel):
    id: str
    action: Literal["paused", "resumed", "triggered", "deleted"]
    changed: bool = True
    """False when it was so already (a pause of a paused schedule, a resume of one that
    was not paused), or when a trigger starts nothing (overlap ``skip``, a run running)."""
    held: str | None = None
    """For a trigger: what keeps the run from starting (an earlier run that still runs,
    under the schedule's overlap policy)."""
    run: str | None = None
    """For a trigger: the session it started, once Temporal started it (null when held,
    or when no run had started within a few seconds)."""


class ScheduleRuns(BaseModel):
    items: list[SessionItem]
    """Its runs, as ``/sessions`` lists sessions."""
    next_cursor: str | None = None
    """Pass as ``cursor`` for the next (older) runs; null on the last page."""


def _client(request: Request) -> VigilClient:
    client: VigilClient = request.app.state.client
    return client


def _out(view: ScheduleView) -> ScheduleOut:
    return ScheduleOut.model_validate(view, from_attributes=True)


async def _visible(request: Request, who: Principal, schedule_id: str) -> ScheduleView:
    view = await ScheduleService(_client(request)).get(schedule_id)
    if not who.sees_agent(view.agent_id):
        raise UnknownSchedule(f"no schedule with id {schedule_id!r}")
    return view


@router.post(
    "/schedules",
    response_model=ScheduleOut,
    status_code=201,
    summary="Create a recurring goal (admin)",
)
async def create_schedule(request: Request, body: ScheduleCreate, who: Admin) -> ScheduleOut:
    check_agent(who, body.agent)
    timing = inputs.schedule_timing(
        cron=body.cron,
        every=body.every,
        time_zone=body.time_zone,
        jitter=body.jitter,
        catchup=body.catchup,
        overlap=body.overlap,
        option="",
    )
    template = inputs.schedule_template(
        agent=body.agent,
        goal=body.goal,
        max_steps=body.max_steps,
        require_approval=body.require_approval,
        agent_version=body.agent_version,
    )
    client = _client(request)
    await client.create_schedule(
        body.id,
        template,
        cron=timing.cron,
        every=timing.every,
        time_zone=timing.time_zone,
        jitter=timing.jitter,
        overlap=timing.overlap,
        catchup_window=timing.catchup,
        paused=body.paused,
        note=body.note,
        sees_agent=who.sees_agent,
    )
    return _out(await ScheduleService(client).get(body.id))


@router.get("/schedules", response_model=ScheduleList, summary="Every goal schedule")
async def list_schedules(request: Request, who: Reader) -> ScheduleList:
    views = await ScheduleService(_client(request)).list(sees_agent=who.sees_agent)
    return ScheduleList(items=[_out(v) for v in views])


@router.get("/schedules/{schedule_id}", response_model=ScheduleOut, summary="One schedule")
async def get_schedule(request: Request, schedule_id: ScheduleId, who: Reader) -> ScheduleOut:
    return _out(await _visible(request, who, schedule_id))


@router.post(
    "/schedules/{schedule_id}/pause", response_model=ScheduleDone, summary="Pause (no new runs)"
)
async def pause_schedule(
    request: Request,
    schedule_id: ScheduleId,
    who: Controller,
    _body: Annotated[None, Depends(no_body)],  # after the token's check
) -> ScheduleDone:
    await _visible(request, who, schedule_id)
    changed = await _client(request).pause_schedule(schedule_id, note=f"paused by {who.actor}")
    return ScheduleDone(id=schedule_id, action="paused", changed=changed)


@router.post("/schedules/{schedule_id}/resume", response_model=ScheduleDone, summary="Unpause")
async def resume_schedule(
    request: Request,
    schedule_id: ScheduleId,
    who: Controller,
    _body: Annotated[None, Depends(no_body)],  # after the token's check
) -> ScheduleDone:
    await _visible(request, who, schedule_id)
    changed = await _client(request).unpause_schedule(schedule_id, note=f"resumed by {who.actor}")
    return ScheduleDone(id=schedule_id, action="resumed", changed=changed)


@router.post(
    "/schedules/{schedule_id}/trigger", response_model=ScheduleDone, summary="Start one run now"
)
async def trigger_schedule(
    request: Request,
    schedule_id: ScheduleId,
    who: Controller,
    _body: Annotated[None, Depends(no_body)],  # after the token's check
) -> ScheduleDone:
    await _visible(request, who, schedule_id)
    done = await _client(request).trigger_schedule(schedule_id)
    return ScheduleDone(
        id=schedule_id, action="triggered", changed=not done.skipped, held=done.held, run=done.run
    )


@router.delete(
    "/schedules/{schedule_id}",
    response_model=ScheduleDone,
    summary="Delete a schedule (admin; its past runs stay in the record)",
)
async def delete_schedule(
    request: Request,
    schedule_id: ScheduleId,
    who: Admin,
    _body: Annotated[None, Depends(no_body)],  # after the token's check
) -> ScheduleDone:
    await _visible(request, who, schedule_id)
    await _client(request).delete_schedule(schedule_id)
    return ScheduleDone(id=schedule_id, action="deleted")


@router.get(
    "/schedules/{schedule_id}/runs",
    response_model=ScheduleRuns,
    summary="A schedule's runs, newest first, paged by cursor (a deleted schedule's too)",
)
async def schedule_runs(
    request: Request,
    schedule_id: ScheduleId,
    who: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> ScheduleRuns:
    page = await _client(request).session_page(
        schedule_id=schedule_id, agents=who.agents, limit=limit, cursor=cursor
    )
    if not page.items and cursor is None:
        await _visible(request, who, schedule_id)  # 404: no such schedule, or not the token's
    items = [SessionItem(**vars(s)) for s in page.items]
    return ScheduleRuns(items=items, next_cursor=page.next_cursor)
