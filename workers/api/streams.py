"""Live streams: Server-Sent Events of one session, or of all of an agent's sessions.

Fed by the process's live feed (workers/feed.py: one LISTEN connection, catch-up from
the record). Event types:

- ``message`` and ``event``: a recorded message or event (an event of kind
  ``approval_requested`` is sent as ``approval_requested``), each with an ``id:``, the
  stream position after it. Reconnecting with ``Last-Event-ID`` resumes exactly there:
  nothing lost, nothing repeated.

A session's stream gives an approval's decision before the result of the tool call it
approved: the session writes the decision before the call runs (``vigil-decision-first``);
for sessions from before, which wrote it with their next record, after the tool ran, the
messages from that result on are held back until the decision is read, while events go
on as they are written. Messages stay in the order they were written, and events too, so
every id is a position a resume continues from exactly. An agent's stream, which interleaves
sessions, is in id order, each row sent once every row with a smaller id its sessions were
writing has committed (``record.feed.settled_bound``), so its ids are exact positions too.
- ``status``: where the session stands (first on connecting, then on every change).
- ``token``: the model's text as it is generated; ephemeral, never replayed on resume
  (``attempt`` grows when a call is retried: drop the tokens of the earlier attempt).
  The recorded ``message`` that follows is the canonical copy.
- ``end``: the session has ended and everything it recorded was sent; the server closes.
  An agent's stream ends only when the agent is erased (``{"agent_id", "status":
  "erased"}``); a stream opened on the name after that follows its new sessions.
- ``revoked``: the stream's token was revoked or has expired (checked every few seconds
  while the stream is open); the server closes, and a reconnect with it gets 401.

Comment lines (``: keepalive``) come while nothing happens, so proxies keep the
connection and a client that went away is noticed and its subscription freed.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from vigil.activities.record.feed import FeedCursor, FeedItem
from vigil.activities.record.order import InOrder
from vigil.workers.api.auth import Reader, check_agent, tokens_of
from vigil.workers.api.deps import SessionId, may_know_of
from vigil.workers.api.errors import INVALID, TOO_MANY_STREAMS, ApiError
from vigil.workers.client import UnknownSession, VigilClient
from vigil.workers.feed import AgentErased, Away, FeedEntry, Idle, StatusChange, Token
from vigil.workers.settings import Settings
from vigil.workers.tokens import Principal

router = APIRouter(tags=["streams"])

RETRY_MS = 2000
TOKEN_RECHECK_SECONDS = 5.0
"""How often an open stream asks whether its token is still live: a revoked or expired
token's streams end within this (and a keepalive) instead of running on."""
log = logging.getLogger(__name__)
"""How long an EventSource waits before it reconnects (sent once per stream)."""

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: message, event, approval_requested, status, "
        "token and end (see the module documentation).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=60,
        description="Resume after this event id (an EventSource sends it on reconnecting).",
    ),
]
WithTokens = Annotated[
    bool, Query(description="Also send the model's tokens as they are generated.")
]


def _frame(kind: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    # json.dumps escapes newlines, so the data is one line whatever the text.
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n"


def _cursor(value: str | None) -> FeedCursor:
    try:
        return FeedCursor.parse(value)
    except ValueError as exc:
        if value is None or value.isascii():
            raise ApiError(422, INVALID, f"Last-Event-ID: {exc}") from None
        # A header's bytes arrive read one by one (Latin-1): quoted as the client sent
        # them, UTF-8 (no position holds more than ASCII digits).
        sent = value.encode("latin-1", "replace").decode("utf-8", "replace")
        said = f"not a stream position: {sent[:60]!r}"
        raise ApiError(422, INVALID, f"Last-Event-ID: {said}") from None


def _token_live(request: Request) -> Callable[[], Awaitable[bool]]:
    """Whether the token the stream was opened with is still live (not revoked, not
    expired); a database that does not answer the check leaves the stream open."""
    presented = request.headers.get("authorization", "").partition(" ")[2]
    service = tokens_of(request)

    async def live() -> bool:
        try:
            return await service.verify(presented) is not None
        except Exception as exc:  # an outage is not a revocation
            log.warning("stream token check failed: %s", type(exc).__name__)
            return True

    return live


async def _sse(
    entries: AsyncIterator[FeedEntry],
    start: FeedCursor,
    live: Callable[[], Awaitable[bool]],
    *,
    heartbeat: float,
    in_order: list[FeedItem] | None = None,
) -> AsyncIterator[str]:
    """The frames of ``entries``; with ``in_order`` (the items before ``start`` that it
    needs, see ``approvals_before``), a decision before the result it approved. Every
    ``TOKEN_RECHECK_SECONDS`` the token is asked again (``live``): once it is revoked or
    expired, a ``revoked`` frame ends the stream."""
    position = start
    checked = time.monotonic()
    last: StatusChange | None = None
    order: InOrder | None = None
    if in_order is not None:
        order = InOrder(events_flow=True)
        order.prime(in_order)

    def frames(items: list[FeedItem]) -> list[str]:
        nonlocal position
        out: list[str] = []
        for item in items:
            position = position.after(item)
            kind = "approval_requested" if item.event_kind == "approval_requested" else item.kind
            out.append(_frame(kind, item.data, position.text()))
        return out

    yield f"retry: {RETRY_MS}\n\n"
    said = time.monotonic()
    async for entry in entries:
        if time.monotonic() - checked >= TOKEN_RECHECK_SECONDS:
            checked = time.monotonic()
            if not await live():
                yield _frame("revoked", {"message": "the token was revoked or has expired"})
                return
        if isinstance(entry, Idle):
            if time.monotonic() - said >= heartbeat:  # a keepalive each heartbeat, no more
                said = time.monotonic()
                yield ": keepalive\n\n"
            continue
        said = time.monotonic()
        if isinstance(entry, FeedItem):
            for frame in frames(order.take(entry) if order is not None else [entry]):
                yield frame
        elif isinstance(entry, Token):
            yield _frame(
                "token",
                {
                    "session_id": entry.session_id,
                    "seq": entry.seq,
                    "attempt": entry.attempt,
                    "index": entry.index,
                    "text": entry.text,
                },
            )
        elif isinstance(entry, AgentErased):
            yield _frame("end", {"agent_id": entry.agent_id, "status": "erased"})
            return
        elif isinstance(entry, Away):
            # The stream stays open and reads again: said as a comment (no event, no id).
            yield (
                f": the record is not answering ({' '.join(entry.why.split())}); "
                f"reading again in {entry.retry_in:g} s\n\n"
            )
        else:
            last = entry
            yield _frame(
                "status",
                {"session_id": entry.session_id, "status": entry.status, "step": entry.step},
            )
    if order is not None:
        for frame in frames(order.rest()):  # a decision that never came
            yield frame
    if last is not None and last.final:
        # A session's stream ends only once it has ended and all it recorded was sent.
        yield _frame(
            "end",
            {
                "session_id": last.session_id,
                "status": last.status,
                "step": last.step,
                "summary": last.summary,
            },
        )


class _OpenStreams:
    """How many event streams are open, in all and by token: each holds its catch-up and
    its queue in the API while open (a client that never reads holds megabytes)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_token: dict[str, int] = {}

    def take(self, settings: Settings, token_id: str) -> None:
        """Count one more stream for ``token_id``, or refuse it (429 for the token's own
        bound, 503 for the API's)."""
        held = self.by_token.get(token_id, 0)
        if held >= settings.api_max_streams_per_token:
            raise ApiError(
                429,
                TOO_MANY_STREAMS,
                f"this token holds {held} open event streams, the most it may "
                f"(VIGIL_API_MAX_STREAMS_PER_TOKEN): close one first",
            )
        if self.total >= settings.api_max_streams:
            raise ApiError(
                503,
                TOO_MANY_STREAMS,
                f"the API holds {self.total} open event streams, the most it may "
                "(VIGIL_API_MAX_STREAMS): try again later",
            )
        self.total += 1
        self.by_token[token_id] = held + 1

    def give_back(self, token_id: str) -> None:
        self.total -= 1
        left = self.by_token.get(token_id, 1) - 1
        if left > 0:
            self.by_token[token_id] = left
        else:
            self.by_token.pop(token_id, None)


def _open_streams(request: Request) -> _OpenStreams:
    state = request.app.state
    if not hasattr(state, "open_streams"):
        state.open_streams = _OpenStreams()
    found: _OpenStreams = state.open_streams
    return found


Frames = AsyncIterator[str]


def _counted(request: Request, who: Principal) -> Callable[[Frames], Frames]:
    """Count the stream about to open against ``who``'s token (refused over the bound);
    the returned wrapper gives it back once the stream ends, however it ends."""
    client: VigilClient = request.app.state.client
    streams = _open_streams(request)
    streams.take(client.settings, who.token_id)
    given: list[bool] = []

    def give_back() -> None:
        if not given:
            given.append(True)
            streams.give_back(who.token_id)

    async def body(frames: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for frame in frames:
                yield frame
        finally:
            give_back()

    def wrapped(frames: AsyncIterator[str]) -> AsyncIterator[str]:
        stream = body(frames)
        # A response that never starts (its client gone first) never runs the generator's
        # `finally`: its count is given back when the generator is dropped.
        weakref.finalize(stream, give_back)
        return stream

    return wrapped


def _streaming(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/sessions/{session_id}/stream",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
    summary="Follow a session live (Server-Sent Events), resumable with Last-Event-ID",
)
async def session_stream(
    request: Request,
    who: Reader,
    session_id: SessionId,
    last_event_id: LastEventId = None,
    tokens: WithTokens = True,
) -> StreamingResponse:
    client: VigilClient = request.app.state.client
    start = _cursor(last_event_id)
    agent = await client.agent_of(session_id)
    if agent is None:
        # Not recorded yet: a session just started (its worker writes the record with its
        # first step) is waited for, as `vigil follow` does, so a stream opened right after
        # the start gets it; one that no worker takes says so (409 no_worker), an unknown
        # id 404 at once.
        row = await client.require_session_soon(session_id, visible=may_know_of(who))
        agent = row.agent_id
    if not who.sees_agent(agent):
        raise UnknownSession(f"no session with id {session_id!r}")  # never says whose
    feed = await client.live_feed()
    heartbeat = client.settings.api_sse_heartbeat_seconds
    before = await feed.approvals_before(agent, session_id, start)
    counted = _counted(request, who)
    entries = feed.follow(
        agent, session_id=session_id, cursor=start, tokens=tokens, idle=_idle(heartbeat)
    )
    return _streaming(
        counted(_sse(entries, start, _token_live(request), in_order=before, heartbeat=heartbeat))
    )


@router.get(
    "/agents/{agent_id}/stream",
    response_class=StreamingResponse,
    responses=SSE_RESPONSES,
    summary="Follow all of an agent's sessions live (Server-Sent Events)",
)
async def agent_stream(
    request: Request,
    who: Reader,
    agent_id: Annotated[str, Path(max_length=200)],
    last_event_id: LastEventId = None,
    tokens: WithTokens = True,
) -> StreamingResponse:
    check_agent(who, agent_id)
    if "\x00" in agent_id:  # no agent has such a name: its stream would wait for ever
        raise ApiError(422, INVALID, "an agent id must not contain NUL characters")
    client: VigilClient = request.app.state.client
    start = _cursor(last_event_id)
    feed = await client.live_feed()
    heartbeat = client.settings.api_sse_heartbeat_seconds
    counted = _counted(request, who)
    entries = feed.follow(agent_id, cursor=start, tokens=tokens, idle=_idle(heartbeat))
    return _streaming(counted(_sse(entries, start, _token_live(request), heartbeat=heartbeat)))


def _idle(heartbeat: float) -> float:
    """How long the feed waits before it says nothing came: the keepalive's period, or the
    token's recheck when shorter, so a quiet stream's token is asked on time too."""
    return min(heartbeat, TOKEN_RECHECK_SECONDS)
