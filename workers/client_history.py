"""What a session did: its recorded messages and events (a page, or followed live) and
Temporal's event history of it, one line per event.

Part of VigilClient (workers/client.py), which re-exports every name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import EventType

from vigil.schema import event_kinds
from vigil.workers.client_errors import BadArgument, UnknownSession
from vigil.workers.client_reads import SessionReads
from vigil.workers.codec import ENCODING as ENCRYPTED

if TYPE_CHECKING:
    # Imported where they are used: a control command needs Temporal alone, and the
    # record's modules (SQLAlchemy) would double its start.
    from vigil.activities.record import sessions as session_reads
    from vigil.activities.record import store as record
    from vigil.activities.record.feed import FeedItem


@dataclass(frozen=True)
class HistoryLine:
    event_id: int
    time: datetime
    kind: str
    detail: str


LOCAL_ACTIVITY_MARKER = "core_local_activity"
"""The marker a local activity leaves in history (its data names the activity type)."""


def local_activity_data(event: Any) -> dict[str, Any] | None:
    """What a local activity's marker says of it (``activity_type``, ``attempt``, ...);
    None for any other event, or a marker whose data cannot be read. The marker holds no
    input: only this, the result and the summary."""
    if not event.HasField("marker_recorded_event_attributes"):
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    payloads = marker.details["data"].payloads
    try:
        data = json.loads(payloads[0].data) if payloads else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def local_activity_type(event: Any) -> str:
    """The activity type a local activity's marker names ("" for any other event)."""
    kind = (local_activity_data(event) or {}).get("activity_type")
    return kind if isinstance(kind, str) else ""


class SessionHistory(SessionReads):
    """A session's messages, events and history (a layer of VigilClient)."""

    async def events_page(
        self, session_id: str, *, after: int = 0, limit: int = 100, kind: str | None = None
    ) -> list[session_reads.EventRow]:
        """A session's events after event id ``after``, oldest first."""
        from vigil.activities.record import sessions as session_reads
        from vigil.activities.record.rls import acting_for

        row = await self.require_session(session_id)
        if kind is not None and event_kinds.canonical(kind) not in event_kinds.ALL:
            raise BadArgument(
                f"unknown event kind {kind[:80]!r}; one of {', '.join(event_kinds.ALL)}"
            )
        async with acting_for(self.db, row.agent_id) as db:
            return await session_reads.events_page(
                db, session_id, after=after, limit=limit, kind=kind
            )

    async def transcript(
        self, session_id: str, *, after_seq: int = -1, limit: int = 100
    ) -> list[record.StoredMessage]:
        from vigil.activities.record import store as record
        from vigil.activities.record.rls import acting_for

        agent = await self.agent_of(session_id)
        if agent is None:
            return []
        async with acting_for(self.db, agent) as db:
            return await record.messages_page(db, session_id, after_seq=after_seq, limit=limit)

    async def first_goal(self, session_id: str) -> str | None:
        """The goal a session was started with (a redirect changes the record's goal, not
        this one): its first message in the record, else its first run's input in
        Temporal (a session no worker has recorded yet); None when neither holds it."""
        first = await self.transcript(session_id, after_seq=-1, limit=1)
        if first and first[0].seq == 0 and first[0].role == "user":
            return str(first[0].content)
        return await self.started_goal(session_id)

    async def transcript_page(
        self, session_id: str, *, after_seq: int = -1, limit: int = 100
    ) -> tuple[list[record.StoredMessage], int | None]:
        """A page of the transcript after ``after_seq``, and the seq to page on from (None
        when no message follows): what `vigil transcript` and the API's page show."""
        # One more than the page, to know whether another page follows.
        rows = await self.transcript(session_id, after_seq=after_seq, limit=limit + 1)
        page = rows[:limit]
        return page, page[-1].seq if len(rows) > limit else None

    async def follow(
        self,
        session_id: str,
        *,
        after_seq: int = -1,
        poll_seconds: float | None = None,
        on_approval: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[record.StoredMessage]:
        """New messages as they land; ends once the session has ended and all is read.

        Fed by the live feed (LISTEN/NOTIFY with catch-up from the record), not by
        polling; ``poll_seconds`` is accepted for older callers and ignored.
        ``on_approval`` is awaited when the session asks for an approval."""
        from vigil.activities.record.feed import FeedItem

        row = await self.require_session_soon(session_id)
        feed = await self.live_feed()
        async for entry in feed.follow(row.agent_id, session_id=session_id, tokens=False):
            if not isinstance(entry, FeedItem):
                _erased_meanwhile(entry)
                continue
            if entry.message is not None and entry.message.seq > after_seq:
                yield entry.message
            elif entry.event_kind == "approval_requested" and on_approval is not None:
                await on_approval()

    async def follow_items(self, session_id: str) -> AsyncIterator[FeedItem]:
        """The session's recorded messages and events in the order they happened, from its
        start and then live; ends once the session has ended and all is read."""
        from vigil.activities.record.feed import FeedItem

        row = await self.require_session_soon(session_id)
        feed = await self.live_feed()
        async for entry in feed.follow(row.agent_id, session_id=session_id, tokens=False):
            if isinstance(entry, FeedItem):
                yield entry
            else:
                _erased_meanwhile(entry)

    async def events(self, session_id: str, kind: str | None = None) -> list[record.StoredEvent]:
        from vigil.activities.record import store as record
        from vigil.activities.record.rls import acting_for

        agent = await self.agent_of(session_id)
        if agent is None:
            return []
        async with acting_for(self.db, agent) as db:
            return await record.list_events(db, session_id, kind=kind)

    async def history(self, session_id: str) -> list[HistoryLine]:
        """Temporal's event history of the session, summarised one line per event."""
        handle = self.handle(session_id)
        history = await self._rpc(session_id, handle.fetch_history())
        lines: list[HistoryLine] = []
        scheduled: dict[int, str] = {}
        for ev in history.events:
            kind = EventType.Name(ev.event_type).removeprefix("EVENT_TYPE_").lower()
            detail = ""
            if ev.HasField("activity_task_scheduled_event_attributes"):
                attrs = ev.activity_task_scheduled_event_attributes
                scheduled[ev.event_id] = attrs.activity_type.name
                detail = await self._summarised(ev, attrs.activity_type.name)
            elif ev.HasField("activity_task_completed_event_attributes"):
                done_id = ev.activity_task_completed_event_attributes.scheduled_event_id
                detail = scheduled.get(done_id, "")
            elif ev.HasField("activity_task_failed_event_attributes"):
                attrs_f = ev.activity_task_failed_event_attributes
                name = scheduled.get(attrs_f.scheduled_event_id, "")
                detail = f"{name}: {attrs_f.failure.message[:120]}"
            elif local := local_activity_type(ev):
                # A local activity (the records, the agent's resolution, a low-latency
                # model call) leaves one marker: shown as what ran, with its summary.
                kind, detail = "local_activity", await self._summarised(ev, local)
                failed = ev.marker_recorded_event_attributes.failure
                if failed.message:
                    detail += f": {failed.message[:120]}"
            elif ev.HasField("workflow_execution_signaled_event_attributes"):
                signaled = ev.workflow_execution_signaled_event_attributes
                detail = signaled.signal_name + await self._sender(signaled.input.payloads)
            elif ev.HasField("workflow_execution_update_accepted_event_attributes"):
                accepted = ev.workflow_execution_update_accepted_event_attributes
                request = accepted.accepted_request.input
                detail = request.name + await self._sender(request.args.payloads)
            elif ev.HasField("workflow_execution_cancel_requested_event_attributes"):
                detail = ev.workflow_execution_cancel_requested_event_attributes.cause
            elif ev.HasField("timer_started_event_attributes"):
                span = ev.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
                detail = await self._summarised(ev, f"timer {timer_span(span)}")
            lines.append(
                HistoryLine(ev.event_id, ev.event_time.ToDatetime(tzinfo=UTC), kind, detail)
            )
        return lines

    async def _summarised(self, event: Any, detail: str) -> str:
        """``detail`` followed by the event's summary (as Temporal UI shows it), if any."""
        if not event.user_metadata.HasField("summary"):
            return detail
        return f"{detail} — {await self._summary_text(event.user_metadata.summary)}"

    async def _sender(self, payloads: Any) -> str:
        """`` by NAME`` for a control signal's or update's input (empty when unreadable)."""
        if len(payloads) != 1:
            return ""
        try:
            value = (await self.temporal.data_converter.decode(list(payloads), [dict]))[0]
        except Exception:  # a key we lack, not JSON: the event still has a line
            return ""
        by = value.get("by") if isinstance(value, dict) else None
        return f" by {by}" if isinstance(by, str) and by else ""

    async def _summary_text(self, payload: Any) -> str:
        """An activity summary as text (a payload: maybe encrypted, JSON-encoded)."""
        try:
            value = (await self.temporal.data_converter.decode([payload], [str]))[0]
        except Exception:  # a key we lack, or not a string payload: show the raw bytes
            if payload.metadata.get("encoding") == ENCRYPTED:
                return "(encrypted)"
            return str(payload.data.decode(errors="replace"))
        return str(value)


def _erased_meanwhile(entry: Any) -> None:
    """A followed session erased while it was followed ends its follow as no session."""
    from vigil.workers.feed import ERASED, StatusChange

    if isinstance(entry, StatusChange) and entry.status == ERASED:
        raise UnknownSession.erased(entry.session_id)


def timer_span(span: timedelta) -> str:
    """A timer's length as a length (``23 h 59 min 59 s``), never as a time of day."""
    total = span.total_seconds()
    if total < 60:
        return f"{total:.3g} s"
    whole = round(total)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    return " ".join(f"{n} {unit}" for n, unit in parts if n)
