"""A folded step's calls that change nothing are answered in the reply's own statement.

A call to a tool that only reads (effects ``none``) or one a built-in refuses by its
arguments alone (``http_fetch`` of a host on no allowlist) runs nothing outside vigil, so
the model activity answers it before recording the reply and writes reply and answers in
one statement: in the record together or not at all, one round trip fewer per step. The
first call that may change something, and every call after it, still runs only once the
reply is recorded. Told apart here by the transaction that wrote each row (``xmin``).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.history import activity_runs
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
)
from vigil.activities.record import store as record
from vigil.activities.tools import registry as tool_registry
from vigil.schema import event_kinds, names
from vigil.schema.payloads import SessionStatus, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

REFUSED = ("http_fetch", {"url": "http://answers.invalid/"})
MISSING = ("read_artifact", {"name": "nothing-here.txt"})
WRITE = ("write_artifact", {"name": "notes.txt", "content": "written after the reply"})
READ = ("read_artifact", {"name": "notes.txt"})


async def _writers(
    sessionmaker: async_sessionmaker[DbSession], session_id: str
) -> tuple[dict[int, str], dict[str, str]]:
    """The transaction that wrote each message (by seq) and each event (by key)."""
    async with sessionmaker() as db:
        messages = await db.execute(
            text("SELECT seq, xmin::text FROM messages WHERE session_id = :sid"),
            {"sid": session_id},
        )
        events = await db.execute(
            text("SELECT key, xmin::text FROM events WHERE session_id = :sid"),
            {"sid": session_id},
        )
        return {int(r[0]): r[1] for r in messages}, {str(r[0]): r[1] for r in events}


async def test_calls_that_change_nothing_are_written_with_their_reply(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_calls(REFUSED, MISSING, WRITE, READ),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        # No approvals: http_fetch would wait for one by default (its effects are external).
        goal = session_input("answer what changes nothing", policy=ToolPolicy(require_approval=[]))
        handle = await start(client, task_queue, goal)
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 2)
    assert names.ACT_RUN_TOOL not in [run.name for run in await activity_runs(handle)]

    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    by_seq = {m.seq: m for m in messages}
    assert [by_seq[s].role for s in range(1, 6)] == ["assistant", "tool", "tool", "tool", "tool"]
    assert "not on the allowlist" in by_seq[2].content  # the refusal, as the tool gives it
    assert by_seq[3].content.startswith("error:")  # no such artifact
    assert "written after the reply" in by_seq[5].content  # the read saw the write

    wrote, wrote_event = await _writers(sessionmaker, handle.id)
    reply = wrote[1]
    # The refusal and the read of nothing: in the reply's statement, with their events.
    assert wrote[2] == wrote[3] == reply
    assert wrote_event["tool:1:0"] == wrote_event["tool:1:1"] == wrote_event["model:1"] == reply
    # The write may change something: it ran after the reply was recorded, and so did the
    # read after it (calls run in order).
    assert wrote[4] != reply and wrote[5] not in (reply, wrote[4])
    assert wrote_event["tool:1:2"] == wrote[4]


async def test_a_read_too_long_to_keep_inline_is_answered_after_its_reply(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # Its output goes to the artifact store (the claim check): a write, so not before the
    # reply is recorded. The read (a recall of a long memory) runs once the reply is in the
    # record, in its own statement. (read_artifact reads in parts that fit inline.)
    long = "tide table " * 200  # 2,200 bytes, over the 1,000-byte inline limit below
    stub.enqueue(
        Reply.tool_call("remember", {"content": long, "subject": "tides"}),
        Reply.tool_calls(REFUSED, ("recall", {"query": "tide table"})),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    tight = stub_settings(settings, stub.url_openai).model_copy(update={"inline_limit_bytes": 1000})
    async with running_worker(client, tight, task_queue):
        goal = session_input("read it back", policy=ToolPolicy(require_approval=[]))
        handle = await start(client, task_queue, goal)
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 3)
    by_seq = {m.seq: m for m in await transcript(sessionmaker, handle.id)}
    # Step 2: the reply at 3, the refusal at 4 (with the reply), the long read at 5 (after).
    assert [by_seq[s].role for s in (3, 4, 5)] == ["assistant", "tool", "tool"]
    assert "stored as artifact" in by_seq[5].content
    wrote, _ = await _writers(sessionmaker, handle.id)
    assert wrote[4] == wrote[3] != wrote[5]


async def test_answers_are_not_written_when_their_reply_was_recorded_first(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # The session ended while the model answered and closed the step: the reply's seq is
    # taken. The model activity's statement then writes none of its answers.
    agent, sid = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(db, session_id=sid, agent_id=agent, goal="g", status="running")
        await record.append_messages(
            db,
            sid,
            agent,
            [
                record.NewMessage(seq=0, role="user", content="g"),
                record.NewMessage(seq=1, role="assistant", content="closed by the session"),
            ],
        )

    def reply(content: str) -> record.NewMessage:
        return record.NewMessage(
            seq=1,
            role="assistant",
            content=content,
            step=1,
            tool_calls=[{"id": "c1", "name": "read_artifact", "arguments": "{}"}],
        )

    answer = record.NewMessage(
        seq=2, role="tool", content="error: x", step=1, name="read_artifact", tool_call_id="c1"
    )
    answer_event = record.NewEvent(
        key="tool:1:0", kind=event_kinds.TOOL_CALL, step=1, payload={"ok": False}
    )

    async def write(session_id: str) -> tuple[bool, bool]:
        """The model activity's statement: the reply, its event and its one answer."""
        async with sessionmaker.begin() as db:
            return await record.append_reply(
                db,
                session_id,
                agent,
                reply("the model's"),
                record.NewEvent(key="model:1", kind=event_kinds.MODEL_CALL, step=1, payload={}),
                tokens_in=1,
                tokens_out=1,
                cost_usd=0.0,
                step=1,
                answers=[answer],
                answer_events=[answer_event],
            )

    wrote, fresh = await write(sid)
    assert (wrote, fresh) == (False, True)
    async with sessionmaker() as db:
        seqs = [m.seq for m in await record.messages_page(db, sid)]
        kept = await record.messages_by_seq(db, sid, [1])
        answered = await record.get_event(db, sid, "tool:1:0")
    assert seqs == [0, 1] and kept[0].content == "closed by the session"
    assert answered is None

    # With the seq free, the same statement writes the reply and its answers.
    other = f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=other, agent_id=agent, goal="g", status="running"
        )
    wrote, fresh = await write(other)
    assert (wrote, fresh) == (True, True)
    async with sessionmaker() as db:
        assert [m.seq for m in await record.messages_page(db, other)] == [1, 2]
        assert await record.get_event(db, other, "tool:1:0") is not None


@pytest.mark.parametrize("streamed", [False, True], ids=["read whole", "read as a stream"])
async def test_an_artifact_too_long_to_keep_inline_is_read_in_parts(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    monkeypatch: pytest.MonkeyPatch,
    streamed: bool,
) -> None:
    # A read longer than the inline limit was itself stored as an artifact and cut to its
    # head again, so the model could never read past that head. Each part now fits, and
    # says where the next begins; the model reads on until the end. An artifact past
    # ``READ_WHOLE_BYTES`` is read as a stream (here: every one).
    if streamed:
        monkeypatch.setattr(tool_registry, "READ_WHOLE_BYTES", 0)
    long = "".join(f"line {n}: high tide at {n % 24:02d}:00\n" for n in range(120))

    def reader(body: Any) -> Reply:
        said = [m.get("content") or "" for m in body["messages"] if m.get("role") == "tool"]
        if not said:
            return Reply.tool_call("write_artifact", {"name": "tides.txt", "content": long})
        on = re.search(r"read on with offset=(\d+)\]$", said[-1])
        if on is not None or len(said) == 1:
            offset = int(on.group(1)) if on is not None else 0
            return Reply.tool_call("read_artifact", {"name": "tides.txt", "offset": offset})
        return Reply.tool_call("finish", {"summary": "read it all"})

    stub.default = reader
    tight = stub_settings(settings, stub.url_openai).model_copy(update={"inline_limit_bytes": 1000})
    async with running_worker(client, tight, task_queue):
        goal = session_input("read it back", policy=ToolPolicy(require_approval=[]))
        result = await (await start(client, task_queue, goal)).result()
    assert result.status == SessionStatus.COMPLETED, result
    reads = [
        m.content
        for m in await transcript(sessionmaker, result.session_id)
        if m.role == "tool" and m.name == "read_artifact"
    ]
    assert len(reads) >= 4 and not any("stored as artifact" in r for r in reads), reads
    assert reads[-1].endswith("; the end]"), reads[-1]
    parts = [re.sub(r"\n\[characters \d+-\d+ of \d+; [^\]]*\]$", "", r) for r in reads]
    assert "".join(parts) == long
