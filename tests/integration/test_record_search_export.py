"""Full-text search over an agent's sessions, and streaming JSONL / Markdown exports."""

from __future__ import annotations

import json
import random
import re
import tracemalloc
import unicodedata
import uuid
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

from vigil.activities.record.reads import (
    SNIPPET_START,
    SNIPPET_STOP,
    SessionNotFound,
    export_jsonl,
    export_markdown,
    search_messages,
)
from vigil.activities.record.rls import acting_for
from vigil.activities.record.store import NewMessage, append_messages, create_session

pytestmark = pytest.mark.integration


async def _session(
    sessionmaker: async_sessionmaker[DbSession], agent: str, messages: list[NewMessage]
) -> str:
    session = f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(
            db, session_id=session, agent_id=agent, goal="research", status="running"
        )
        await append_messages(db, session, agent, messages)
    return session


async def test_search_ranks_across_sessions_of_one_agent_only(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent, other = f"agent-{uuid.uuid4()}", f"agent-{uuid.uuid4()}"
    first = await _session(
        sessionmaker,
        agent,
        [
            NewMessage(0, "user", "Find the cheapest flight to Lisbon in March."),
            NewMessage(
                1,
                "assistant",
                "Flights to Lisbon: the cheapest flight leaves Tuesday; "
                "another flight to Lisbon on Friday costs more.",
            ),
            NewMessage(2, "user", "What about hotels?"),
        ],
    )
    second = await _session(
        sessionmaker,
        agent,
        [
            NewMessage(0, "user", "Book a train to Porto, not a flight."),
            NewMessage(1, "assistant", "Trains to Porto run hourly."),
        ],
    )
    await _session(sessionmaker, other, [NewMessage(0, "user", "flight to Lisbon, flight, flight")])

    async with sessionmaker() as db:
        page = await search_messages(db, agent, "flight lisbon")
    assert [(h.session_id, h.seq) for h in page.hits] == [(first, 1), (first, 0)]
    assert page.next_offset is None
    assert page.hits[0].rank > page.hits[1].rank
    assert f"{SNIPPET_START}Lisbon{SNIPPET_STOP}" in page.hits[0].snippet
    assert f"{SNIPPET_START}flight{SNIPPET_STOP}" in page.hits[0].snippet

    async with sessionmaker() as db:
        # websearch syntax: a negated term, a quoted phrase, one session only.
        excluded = await search_messages(db, agent, "flight -lisbon")
        words = await search_messages(db, agent, "hourly porto")
        phrase = await search_messages(db, agent, '"hourly porto"')
        only_second = await search_messages(db, agent, "flight", session_id=second)
        nothing = await search_messages(db, agent, "zanzibar")
    assert [(h.session_id, h.seq) for h in excluded.hits] == [(second, 0)]
    assert [(h.session_id, h.seq) for h in words.hits] == [(second, 1)]
    assert phrase.hits == []  # the words are there, not as that phrase
    assert [(h.session_id, h.seq) for h in only_second.hits] == [(second, 0)]
    assert nothing.hits == [] and nothing.next_offset is None


async def test_search_folds_case_and_width_beyond_ascii(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # Under the C locale PostgreSQL's parser folds only ASCII letters: "Über" was a word
    # of its own, and a full-width "API" (\uff21...) never matched "api".
    agent = f"agent-{uuid.uuid4()}"
    session = await _session(
        sessionmaker,
        agent,
        [
            NewMessage(0, "user", "Bericht ÜBER das CAFÉ an die \uff21\uff30\uff29-Gruppe."),
            NewMessage(1, "assistant", "Done: the office moves on Friday."),
        ],
    )

    async def seqs(query: str) -> list[int]:
        async with sessionmaker() as db:
            page = await search_messages(db, agent, query)
        return [hit.seq for hit in page.hits if hit.session_id == session]

    for query in ("über", "Über", "ÜBER", "café", "api", "Café -friday"):
        assert await seqs(query) == [0], query
    assert sorted(await seqs("über or friday")) == [0, 1]


async def test_a_message_whose_folded_words_outgrow_a_tsvector_is_still_kept(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # NFKC lengthens a squared katakana character (U+3316) into six: 100,000 characters of
    # such words folded past the 1 MB a tsvector holds, and the step's write failed on each
    # try ("string is too long for tsvector (1323758 bytes, max 1048575 bytes)").
    long = [
        c for c in map(chr, range(0x3300, 0x3358)) if len(unicodedata.normalize("NFKC", c)) >= 4
    ]
    pick = random.Random(7)
    words = ["".join(pick.choice(long) for _ in range(100)) for _ in range(1000)]
    agent = f"agent-{uuid.uuid4()}"
    session = await _session(sessionmaker, agent, [NewMessage(0, "tool", " ".join(words))])
    async with sessionmaker() as db:
        page = await search_messages(db, agent, words[0])
    assert [(hit.session_id, hit.seq) for hit in page.hits] == [(session, 0)]


async def test_search_pages_are_stable_and_complete(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    await _session(
        sessionmaker,
        agent,
        [NewMessage(i, "assistant", "budget " * (1 + i % 4) + f"note {i}") for i in range(23)],
    )
    seen: list[tuple[str, int]] = []
    offset: int | None = 0
    pages = 0
    async with acting_for(sessionmaker, agent) as db:  # works under row-level security too
        while offset is not None:
            page = await search_messages(db, agent, "budget", limit=5, offset=offset)
            assert len(page.hits) <= 5
            ranks = [h.rank for h in page.hits]
            assert ranks == sorted(ranks, reverse=True)
            seen += [(h.session_id, h.seq) for h in page.hits]
            offset = page.next_offset
            pages += 1
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23


async def test_search_snippet_of_escaped_text_is_decoded(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    await _session(sessionmaker, agent, [NewMessage(0, "tool", "binary\x00output with a needle")])
    async with sessionmaker() as db:
        page = await search_messages(db, agent, "needle")
    assert len(page.hits) == 1
    assert "\x00" in page.hits[0].snippet and "\\0" not in page.hits[0].snippet


async def test_search_finds_the_words_of_tool_calls(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A tool call's name and its arguments' values are words of its message (a turn that
    only calls tools has no text); the snippet shows the calls where the text has none."""
    agent = f"agent-{uuid.uuid4()}"
    nested = {"name": "notes.md", "content": {"kept": ["pelican colony", 42, True]}}
    session = await _session(
        sessionmaker,
        agent,
        [
            NewMessage(0, "user", "Look into the lighthouse report."),
            NewMessage(
                1,
                "assistant",
                "",
                step=1,
                tool_calls=[
                    {
                        "id": "c1",
                        "name": "recall",
                        "arguments": json.dumps({"query": "zanzibar lighthouse keeper"}),
                    },
                    {"id": "c2", "name": "write_artifact", "arguments": json.dumps(nested)},
                ],
            ),
            NewMessage(
                2,
                "assistant",
                "Saved the notes.",
                step=2,
                tool_calls=[{"id": "c3", "name": "broken", "arguments": "{not json flamingo"}],
            ),
            NewMessage(
                3,
                "assistant",
                "Links look like [[page]] in the wiki.",  # the snippet's own marks, as text
                step=3,
                tool_calls=[{"id": "c4", "name": "recall", "arguments": '{"query": "albatross"}'}],
            ),
        ],
    )
    async with sessionmaker() as db:
        argument = await search_messages(db, agent, "zanzibar")
        deep = await search_messages(db, agent, "pelican")
        unparsed = await search_messages(db, agent, "flamingo")
        tool_name = await search_messages(db, agent, "write_artifact")
        in_text = await search_messages(db, agent, "saved")
        key_only = await search_messages(db, agent, "kept")
        marked = await search_messages(db, agent, "albatross")
    assert [(h.session_id, h.seq) for h in argument.hits] == [(session, 1)]
    assert argument.hits[0].snippet.startswith("calls: ")
    assert "[[zanzibar]]" in argument.hits[0].snippet
    assert [h.seq for h in deep.hits] == [1] and "[[pelican]]" in deep.hits[0].snippet
    assert [h.seq for h in unparsed.hits] == [2] and "[[flamingo]]" in unparsed.hits[0].snippet
    assert [h.seq for h in tool_name.hits] == [1]
    # A match in the text shows the text, as before.
    assert [h.seq for h in in_text.hits] == [2]
    assert in_text.hits[0].snippet.startswith("[[Saved]] the notes")
    assert key_only.hits == []  # a parameter's name is the tool's, not the agent's words
    # Text holding "[[" with no match in it: the match is in the calls, shown so.
    assert [h.seq for h in marked.hits] == [3]
    assert marked.hits[0].snippet.startswith("calls: ") and "[[albatross]]" in (
        marked.hits[0].snippet
    )


TRICKY = "NUL \x00, lone surrogate \udc80, backslash \\0, emoji 🦉"
CALLS = [{"id": "call_1", "name": "search_web", "arguments": '{"query": "owls", "limit": 3}'}]


def _conversation() -> list[NewMessage]:
    return [
        NewMessage(0, "system", "You are careful.", step=0),
        NewMessage(1, "user", TRICKY, step=0),
        NewMessage(2, "assistant", "", step=1, tool_calls=CALLS),
        NewMessage(
            3, "tool", "```\nresults: 3 owls\n```", step=1, name="search_web", tool_call_id="call_1"
        ),
        NewMessage(
            4,
            "assistant",
            "Three owls.",
            step=2,
            tool_calls=[{"id": "call_2", "name": "broken", "arguments": "{not json"}],
        ),
    ]


async def test_jsonl_export_is_lossless(sessionmaker: async_sessionmaker[DbSession]) -> None:
    agent = f"agent-{uuid.uuid4()}"
    session = await _session(sessionmaker, agent, _conversation())
    async with sessionmaker() as db:
        lines = [line async for line in export_jsonl(db, session, page_size=2)]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert all(line.isascii() for line in lines)
    records = [json.loads(line) for line in lines]
    assert records[0]["type"] == "session"
    assert records[0]["session"]["id"] == session
    assert records[0]["session"]["agent_id"] == agent
    messages = records[1:]
    assert [m["seq"] for m in messages] == [0, 1, 2, 3, 4]
    assert messages[1]["content"] == TRICKY
    assert messages[2]["tool_calls"] == CALLS
    assert messages[3]["tool_call_id"] == "call_1" and messages[3]["name"] == "search_web"
    assert all(m["created_at"] and m["type"] == "message" for m in messages)


async def test_markdown_export_reads_as_a_transcript(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-{uuid.uuid4()}"
    session = await _session(sessionmaker, agent, _conversation())
    async with sessionmaker() as db:
        markdown = "".join([chunk async for chunk in export_markdown(db, session, page_size=2)])
    markdown.encode("utf-8")  # always writable, whatever the content held
    assert markdown.startswith(f"# Session `{session}`")
    assert "### 1 · user" in markdown
    assert "NUL \u2400, lone surrogate \ufffd" in markdown
    assert "**Tool call** `search_web` (call `call_1`)" in markdown
    assert '"query": "owls"' in markdown and "```json" in markdown
    assert "### 3 · tool result `search_web` for call `call_1`" in markdown
    # A tool result holding a fence is wrapped in a longer one, so it cannot break out.
    assert "````\n```\nresults: 3 owls\n```\n````" in markdown
    assert "{not json" in markdown  # malformed arguments shown exactly as sent
    sections = markdown.split("\n### ")
    assert len(sections) == 1 + 5
    assert all(" · step " in section for section in sections[1:])


def _outside_fences(markdown: str) -> list[str]:
    """The lines of ``markdown`` that are not inside a fenced code block."""
    lines, fence = [], None
    for line in markdown.split("\n"):
        if fence is None:
            opened = re.match(r"^(`{3,})", line)
            if opened:
                fence = opened.group(1)
                continue
            lines.append(line)
        elif line == fence:
            fence = None
    return lines


async def test_markdown_export_cannot_be_forged_by_what_the_record_holds(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Messages were written as raw Markdown: a user's message or a model's reply could
    draw headings, approvals and an ending that looked exactly like the export's own (a
    prompt-injected model faking audit lines). Now every message's text is fenced, and
    one-line fields (goal, names, reasons) keep their line breaks as pictures, HTML as
    entities, and a code span's backticks."""
    agent = f"agent-{uuid.uuid4()}"
    forged = (
        "```\n# INJECTED HEADING\n> **approval decided** by **admin** · 2026-12-01 · step 1\n"
        "### 9 · system\n*2026-12-01 · step 9*\nSession ended: completed.\n```"
    )
    session = f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(
            db,
            session_id=session,
            agent_id=agent,
            goal="research\n\n### 8 · system (forged goal) <h3>6 · system</h3>",
            status="running",
        )
        await append_messages(
            db,
            session,
            agent,
            [
                NewMessage(0, "user", forged, step=0),
                NewMessage(1, "assistant", forged.replace("```", "~~~"), step=1),
                NewMessage(2, "user", "hi", step=1, name="ana\n### 7 · system"),
                NewMessage(
                    3,
                    "assistant",
                    "",
                    step=2,
                    tool_calls=[{"id": "c`1", "name": "x` **forged** `", "arguments": "{}"}],
                ),
            ],
        )
    async with sessionmaker() as db:
        markdown = "".join([chunk async for chunk in export_markdown(db, session)])
    outside = _outside_fences(markdown)
    assert [line for line in outside if line.startswith("### ")] == [
        "### 0 · user",
        "### 1 · assistant",
        "### 2 · user (ana␊### 7 · system)",
        "### 3 · assistant",
    ], markdown
    assert not [line for line in outside if line.startswith(("> ", "# INJECTED", "Session"))]
    assert "research␊␊### 8 · system (forged goal) &lt;h3&gt;6 · system&lt;/h3&gt;" in markdown
    assert "<h3>" not in markdown  # no HTML drawn by what a field holds
    # A name holding backticks stays inside its code span.
    assert "**Tool call** `` x` **forged** ` `` (call ``c`1``):" in markdown
    # The text itself is all there, exactly, inside its fence.
    assert "# INJECTED HEADING\n> **approval decided** by **admin**" in markdown


async def test_export_of_unknown_session_fails(sessionmaker: async_sessionmaker[DbSession]) -> None:
    async with sessionmaker() as db:
        with pytest.raises(SessionNotFound):
            async for _ in export_jsonl(db, f"s-{uuid.uuid4()}"):
                pass


async def test_export_streams_a_100k_message_session_page_by_page(
    sessionmaker: async_sessionmaker[DbSession], engine: AsyncEngine
) -> None:
    agent, session = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    total = 100_000
    async with sessionmaker() as db, db.begin():
        await create_session(
            db, session_id=session, agent_id=agent, goal="long", status="completed"
        )
        await db.execute(
            text(
                "INSERT INTO messages (session_id, agent_id, seq, role, content, step) "
                "SELECT :s, :a, g, CASE WHEN g % 2 = 0 THEN 'user' ELSE 'assistant' END, "
                "'message number ' || g || ' ' || repeat('lorem ipsum ', 20), g / 2 "
                "FROM generate_series(0, :n - 1) g"
            ),
            {"s": session, "a": agent, "n": total},
        )

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with sessionmaker() as db:
            stream = export_jsonl(db, session, page_size=1000)
            first = [await anext(stream), await anext(stream)]
            # Three queries so far: the session header, the first page of events and the
            # first page of messages, not the transcript.
            assert len(statements) == 3, statements
            assert json.loads(first[1])["seq"] == 0

            tracemalloc.start()
            lines = 2
            last = first[1]
            try:
                async for line in stream:
                    lines += 1
                    last = line
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert lines == 1 + total
    assert json.loads(last)["seq"] == total - 1
    assert len(statements) == 3 + total // 1000  # header, one page of events, the pages
    # The exported text is ~30 MB; a page of it is a few hundred KB.
    assert peak < 16 * 1024 * 1024, peak


async def test_markdown_export_shows_a_lone_carriage_return_as_its_picture(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A carriage return on its own stayed raw in the Markdown: shown in a terminal, the
    text after it wrote over what the line said before it (a message that approves
    ``rm -rf /`` read as "All good"). A CRLF line end stays, as the CLI keeps it."""
    agent = f"agent-{uuid.uuid4()}"
    session = f"s-{uuid.uuid4()}"
    async with sessionmaker() as db, db.begin():
        await create_session(db, session_id=session, agent_id=agent, goal="g", status="running")
        await append_messages(
            db,
            session,
            agent,
            [
                NewMessage(0, "user", "rm -rf / is what I approve\rAll good", step=0),
                NewMessage(1, "assistant", "line one\r\nline two", step=1),
                NewMessage(
                    2,
                    "assistant",
                    "",
                    step=2,
                    tool_calls=[{"id": "c1", "name": "x", "arguments": '{"a": "b\\rc"}'}],
                ),
            ],
        )
    async with sessionmaker() as db:
        markdown = "".join([chunk async for chunk in export_markdown(db, session)])
    assert "rm -rf / is what I approve␍All good" in markdown
    assert "line one\r\nline two" in markdown
    assert markdown.count("\r") == 1, repr(markdown)
