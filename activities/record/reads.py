"""Reading the session record back: full-text search and transcript export.

Search runs over every hot (not archived) message of one agent, ranked, with a snippet,
one page at a time. Exports stream: they walk the transcript with
``store.messages_page`` and yield one line at a time, so a session of any length is
exported in constant memory. JSONL is lossless (text is decoded, and JSON escapes NUL
and lone surrogates); Markdown is for reading and shows those characters visibly.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.archived import archived_transcript, restore_hint
from vigil.activities.record.rls import acting_for
from vigil.activities.record.store import StoredEvent, StoredMessage, events_page, messages_page
from vigil.schema import jsonlimits, textcodec
from vigil.schema.jsonlimits import MAX_ARGUMENT_DEPTH
from vigil.schema.printable import visible

SNIPPET_START = "[["
SNIPPET_STOP = "]]"
_HEADLINE_OPTIONS = (
    f"StartSel={SNIPPET_START}, StopSel={SNIPPET_STOP}, "
    'MaxWords=35, MinWords=12, MaxFragments=2, FragmentDelimiter=" … "'
)
MAX_PAGE = 200
SEARCHED_CHARS = 100_000
"""A message's words are read from this many characters of its text and of its calls'
(migration 20261207_27): a snippet is made from no more."""


class SessionNotFound(LookupError):
    """No session with that id (or not one the current agent may see)."""


@dataclass(frozen=True)
class SearchHit:
    session_id: str
    seq: int
    role: str
    step: int
    created_at: datetime
    rank: float
    snippet: str
    """The best fragments of the message, matches between ``[[`` and ``]]``."""


@dataclass(frozen=True)
class SearchPage:
    hits: list[SearchHit]
    next_offset: int | None
    """Pass as ``offset`` for the next page; None when this page is the last."""


async def search_messages(
    db: DbSession,
    agent_id: str,
    query: str,
    *,
    session_id: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> SearchPage:
    """Full-text search of an agent's messages (web-search syntax: "quoted", or, -not).

    Ranked by ``ts_rank_cd`` (ties by session and seq, so pages are stable); snippets are
    computed for the returned page only, since ``ts_headline`` re-parses the text. Runs
    acting for the agent: the ranked ids come from ``vigil_search_messages``, which
    searches only the acting agent's messages with the GIN index that the policies would
    otherwise keep PostgreSQL from using, and the rows are read under the policies.
    """
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    async with acting_for(db, agent_id):
        rows = (
            (
                await db.execute(
                    text(
                        "WITH q AS "
                        "(SELECT websearch_to_tsquery('english', vigil_fold(:query)) AS q), "
                        "page AS (SELECT p.id, p.rank FROM q, "
                        "  vigil_search_messages(q.q, CAST(:sid AS text), :lim, :off) AS p) "
                        "SELECT m.session_id, m.seq, m.role, m.step, m.created_at, "
                        "m.content_enc, page.rank, "
                        "ts_headline('english', m.content, q.q, :opts) AS snippet, "
                        # The calls' fragments when the query matches them and not the
                        # text, asked of the words as the trigger reads them: the marks
                        # in a fragment cannot tell, as the text may hold them itself.
                        "CASE WHEN m.tool_calls IS NOT NULL AND NOT (to_tsvector('english', "
                        f"left(vigil_fold(left(m.content, {SEARCHED_CHARS})), "
                        f"{SEARCHED_CHARS})) @@ q.q) THEN ts_headline('english', "
                        f"left(vigil_call_words(m.tool_calls), {SEARCHED_CHARS}), q.q, :opts) "
                        "END AS call_snippet "
                        "FROM page JOIN messages m ON m.id = page.id, q "
                        "ORDER BY page.rank DESC, m.session_id, m.seq"
                    ),
                    {
                        "query": query,
                        "sid": session_id,
                        "lim": limit + 1,
                        "off": offset,
                        "opts": _HEADLINE_OPTIONS,
                    },
                )
            )
            .mappings()
            .all()
        )
    hits = [
        SearchHit(
            session_id=r["session_id"],
            seq=r["seq"],
            role=r["role"],
            step=r["step"],
            created_at=r["created_at"],
            rank=float(r["rank"]),
            snippet=_snippet(r["snippet"], r["content_enc"], r["call_snippet"]),
        )
        for r in rows[:limit]
    ]
    return SearchPage(hits, offset + limit if len(rows) > limit else None)


def _snippet(text_part: str, content_enc: int, calls_part: str | None) -> str:
    """The text's fragments; where the query matches the message's tool calls (their names
    and arguments) and not its text (``calls_part`` is made only then), theirs, after
    ``calls:``."""
    if calls_part is None or SNIPPET_START not in calls_part:
        return textcodec.decode(text_part, content_enc)
    return f"calls: {calls_part}"


async def _session_header(db: DbSession, session_id: str) -> dict[str, Any]:
    row = (
        await db.execute(
            text("SELECT to_jsonb(s) AS s FROM sessions s WHERE s.id = :id"), {"id": session_id}
        )
    ).first()
    if row is None:
        raise SessionNotFound(session_id)
    value = row[0]
    header: dict[str, Any] = json.loads(value) if isinstance(value, str) else dict(value)
    header["metadata"] = textcodec.decode_json(header.get("metadata") or {})
    return header


async def _pages(
    db: DbSession, session_id: str, page_size: int
) -> AsyncIterator[list[StoredMessage]]:
    after = -1
    while True:
        page = await messages_page(db, session_id, after_seq=after, limit=page_size)
        if not page:
            return
        yield page
        after = page[-1].seq


def message_json(message: StoredMessage) -> dict[str, Any]:
    """One message as the JSON object of an export line (decoded text, ISO timestamps)."""
    return {
        "type": "message",
        "session_id": message.session_id,
        "seq": message.seq,
        "step": message.step,
        "role": message.role,
        "name": message.name,
        "content": message.content,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "created_at": message.created_at.isoformat(),
    }


async def export_jsonl(
    db: DbSession, session_id: str, *, page_size: int = 500
) -> AsyncIterator[str]:
    """Yield the session as JSON Lines: a ``session`` header, then one line per message.

    Each yielded string is one line ending in ``\\n``. ``json.dumps`` escapes NUL and
    lone surrogates (``\\u0000``, ``\\udc80``), so the output is ASCII and lossless.
    """
    header = await _session_header(db, session_id)
    yield json.dumps({"type": "session", "session": header}, sort_keys=True) + "\n"
    async for item in _timeline(db, session_id, page_size):
        line = message_json(item) if isinstance(item, StoredMessage) else event_json(item)
        yield json.dumps(line) + "\n"


# Per-call usage lines: counted in the session header's totals, noise in a transcript.
_QUIET_EVENTS = ("model_call",)


async def _timeline(
    db: DbSession, session_id: str, page_size: int
) -> AsyncIterator[StoredMessage | StoredEvent]:
    """Messages with the session's events (approvals, decisions, pauses, redirects, who
    did them) in the order they happened; both read page by page. An event is placed at
    its action's own time (``StoredEvent.at``): a decision, written with the session's
    next record, still comes before the result of the tool call it approved. Nothing comes
    before the goal, the session's first message: a pause sent before a worker first ran
    the session is handled before the goal is written, and is placed after it."""
    events = aiter(_event_stream(db, session_id, page_size))
    pending = await anext(events, None)
    opened: datetime | None = None
    async for page in _pages(db, session_id, page_size):
        for message in page:
            opened = opened or message.created_at
            # An event written with this message (the same time) comes after it.
            while pending is not None and max(pending.at, opened) < message.created_at:
                yield pending
                pending = await anext(events, None)
            yield message
    while pending is not None:
        yield pending
        pending = await anext(events, None)


async def _event_stream(
    db: DbSession, session_id: str, page_size: int
) -> AsyncIterator[StoredEvent]:
    after: tuple[datetime, int] | None = None
    while True:
        page = await events_page(
            db, session_id, after=after, limit=page_size, skip_kinds=_QUIET_EVENTS
        )
        for _, event in page:
            yield event
        if len(page) < page_size:
            return
        after = page[-1][0]


def event_json(event: StoredEvent) -> dict[str, Any]:
    """One event as the JSON object of an export line."""
    return {
        "type": "event",
        "kind": event.kind,
        "step": event.step,
        "actor": event.actor,
        "reason": event.reason,
        "payload": event.payload,
        "created_at": event.created_at.isoformat(),
        "at": event.at.isoformat(),
    }


def event_markdown(event: StoredEvent) -> str:
    """One event as a quoted line between the messages: what, who, when, why."""
    what = event.kind.replace("_", " ")
    who = f" by **{_line(event.actor)}**" if event.actor else ""
    detail = {k: v for k, v in event.payload.items() if v not in (None, "", [], {})}
    parts = [f"> **{what}**{who} · {_when(event.at)} · step {event.step}"]
    if event.reason:
        parts.append(f"> {_line(event.reason)}")
    if detail:
        shown = json.dumps(detail, ensure_ascii=False, default=str)
        parts.append(f"> {_code(shown[:500])}")
    return "\n".join(parts) + "\n\n"


def _printable(value: str) -> str:
    """Readable, harmless text: NUL and other controls as their Unicode pictures; C1
    controls, bidi overrides and lone surrogates as U+FFFD, so the Markdown can always be
    written as UTF-8 (the CLI's rule too: schema/printable.py). Line ends (LF, CRLF) and
    tabs stay; a carriage return on its own, which would write over its line in a
    terminal, is shown as its picture."""
    return visible(value, keep="\t\n")


def _line(value: str) -> str:
    """A one-line field of prose (a goal, a reason, an actor) as ``_printable`` shows it,
    its line breaks as their pictures too and ``& < >`` as entities: nothing it holds
    starts a line of the export (a heading, a quoted event) or draws one as HTML."""
    return html.escape(visible(value, keep="\t"), quote=False)


def _code(value: str) -> str:
    """A one-line field shown as code (an id, a name, a URI): in a code span whose
    backticks outnumber any run inside it, so nothing it holds ends the span."""
    shown = visible(value, keep="\t")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", shown)), default=0) + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def _fenced(body: str, info: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}\n"


def _call_parts(call: Any) -> tuple[str, str, str]:
    """(id, name, arguments text) of a stored tool call, in our shape or OpenAI's."""
    if not isinstance(call, dict):
        return "", "?", json.dumps(call)
    nested = call.get("function")
    function: dict[str, Any] = nested if isinstance(nested, dict) else {}
    name = call.get("name") or function.get("name") or "?"
    arguments = call.get("arguments", function.get("arguments", ""))
    if not isinstance(arguments, str):
        return str(call.get("id") or ""), str(name), json.dumps(arguments, ensure_ascii=False)
    return str(call.get("id") or ""), str(name), arguments


def _pretty_arguments(arguments: str) -> tuple[str, str]:
    try:
        value = jsonlimits.loads(arguments, MAX_ARGUMENT_DEPTH)
        return json.dumps(value, indent=2, ensure_ascii=False), "json"
    except ValueError:  # TooDeep included
        return arguments, ""  # the model's malformed arguments, shown exactly as sent


def _when(moment: datetime | None) -> str:
    return moment.isoformat(sep=" ", timespec="milliseconds") if moment else "-"


def _moment(value: Any) -> datetime | None:
    """A time of the session row as read through ``to_jsonb`` (an ISO string), or None."""
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _markdown_header(header: dict[str, Any]) -> str:
    lines = [
        f"# Session {_code(str(header['id']))}",
        "",
        f"- **Agent:** {_code(str(header['agent_id']))}",
        f"- **Goal:** {_line(str(header['goal']))}",
        f"- **Status:** {header['status']} (step {header['step']})",
        f"- **Started:** {_when(_moment(header.get('created_at')))}",
        f"- **Finished:** {_when(_moment(header.get('finished_at')))}",
        f"- **Tokens:** {header['tokens_in']} in / {header['tokens_out']} out, "
        f"cost ${float(header['cost_usd']):.4f}",
    ]
    if header.get("summary"):
        lines.append(f"- **Summary:** {_line(str(header['summary']))}")
    archived = archived_transcript(header.get("metadata"))
    if archived is not None:  # the transcript below is empty: say where it is
        lines.append(
            f"- **Archived:** {_when(archived.archived_at)} to {_code(archived.uri)} "
            f"({archived.messages} messages, {archived.events} events); "
            f"`{restore_hint(str(header['id']))}` brings them back"
        )
    return "\n".join(lines) + "\n\n"


def message_markdown(message: StoredMessage) -> str:
    """One message as a Markdown section: its text in a code block (as written, never
    read as Markdown)."""
    title = f"### {message.seq} · {message.role}"
    if message.role == "tool":
        label = f" {_code(message.name)}" if message.name else ""
        answers = f" for call {_code(message.tool_call_id)}" if message.tool_call_id else ""
        title = f"### {message.seq} · tool result{label}{answers}"
    elif message.name:
        title += f" ({_line(message.name)})"
    parts = [f"{title}\n", f"*{_when(message.created_at)} · step {message.step}*\n\n"]
    content = _printable(message.content)
    if message.role == "tool" or content:
        # Fenced, whoever wrote it: a message's text shown as Markdown could draw the
        # export's own headings and quoted events (an approval, an ending) in its place.
        parts.append(_fenced(content))
    for call in message.tool_calls or []:
        call_id, name, arguments = _call_parts(call)
        body, info = _pretty_arguments(arguments)
        ident = f" (call {_code(call_id)})" if call_id else ""
        parts.append(f"\n**Tool call** {_code(name)}{ident}:\n\n")
        parts.append(_fenced(_printable(body), info))
    return "".join(parts) + "\n"


async def export_markdown(
    db: DbSession, session_id: str, *, page_size: int = 500
) -> AsyncIterator[str]:
    """Yield a readable Markdown transcript, one header then one chunk per message."""
    header = await _session_header(db, session_id)
    yield _markdown_header(header)
    async for item in _timeline(db, session_id, page_size):
        if isinstance(item, StoredMessage):
            yield message_markdown(item)
        else:
            yield event_markdown(item)
