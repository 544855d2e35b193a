"""Bad input has a defined outcome and never crashes a session.

From humans: a malformed or oversized signal is refused (counted in
``state.rejected_inputs`` and recorded as a ``rejected_input`` event), the update variant
gets a clear validation error, text with NUL characters is valid and kept losslessly, and
an unknown session id is Temporal's NOT_FOUND. From the model: bad tool calls go back to
it as tool errors, until too many replies in a row are all invalid.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    assert_whole,
    events,
    eventually,
    raw_json,
    running_worker,
    session_input,
    session_row,
    start,
    state,
    stub_settings,
    tool_messages,
    transcript,
    until,
    user_texts,
)
from vigil.activities.record.store import StoredEvent
from vigil.schema import names
from vigil.schema.payloads import (
    MAX_HUMAN_TEXT,
    Ack,
    ApproveInput,
    MessageInput,
    SessionResult,
    SessionStatus,
    ToolPolicy,
)
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

NUL_TEXT = "before\x00after \x00\x00 ünï \U0001f30a end"


def _cfg(settings: Settings, stub: LLMStub) -> Settings:
    return stub_settings(settings, stub.url_openai, http_allow=stub.host_port)


def _wait_for_approval_then_finish(stub: LLMStub) -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )


# (signal name, args sent, words the recorded reason must contain)
BAD_SIGNALS: list[tuple[str, list[Any], list[str]]] = [
    (names.SIG_MESSAGE, [{"txt": 1}], ["MessageInput", "text", "Field required"]),
    (names.SIG_MESSAGE, [{"text": 5, "by": "x"}], ["MessageInput", "valid string"]),
    (names.SIG_MESSAGE, [raw_json('"just a string"')], ["MessageInput"]),
    (names.SIG_MESSAGE, [raw_json("[1, 2]")], ["MessageInput"]),
    (names.SIG_MESSAGE, [raw_json(b"{not json")], ["MessageInput", "JSON"]),
    (names.SIG_MESSAGE, [raw_json(b"\x00\xff", encoding=b"binary/plain")], ["not a JSON object"]),
    (names.SIG_MESSAGE, [raw_json(b"{}", encoding=b"made/up")], ["MessageInput"]),
    (names.SIG_MESSAGE, [], ["expected one JSON object argument, got 0"]),
    (names.SIG_MESSAGE, [{"text": "a"}, {"text": "b"}], ["got 2"]),
    (names.SIG_MESSAGE, [{"text": "x" * (MAX_HUMAN_TEXT + 1)}], [str(MAX_HUMAN_TEXT), "exceeds"]),
    (names.SIG_MESSAGE, [{"text": "   "}], ["empty"]),
    (names.SIG_REDIRECT, [{"goal": "g" * (MAX_HUMAN_TEXT + 1)}], ["exceeds"]),
    (names.SIG_PAUSE, [{"by": ["not", "a", "string"]}], ["PauseInput"]),
    (names.SIG_PAUSE, [{"by": "b" * 1000}], ["`by`", "exceeds"]),
    (names.SIG_MESSAGE, [{"text": "hi", "by": "nul\x00by"}], ["`by`", "NUL"]),
    # One-line text (a goal, a reason, a note) is kept in plain columns: NUL is refused
    # there as in `by` and a start's goal, where a redirect's goal was stored rewritten.
    (names.SIG_REDIRECT, [{"goal": "new\x00goal", "by": "x"}], ["goal", "NUL"]),
    (names.SIG_PAUSE, [{"reason": "lu\x00nch"}], ["`reason`", "NUL"]),
    (names.SIG_APPROVE, [{"approval_id": "a1-0", "note": "o\x00k"}], ["`note`", "NUL"]),
    (names.SIG_REJECT, [{"approval_id": "a1-0", "reason": "n\x00o"}], ["`reason`", "NUL"]),
    (names.SIG_APPROVE, [{"approval_id": 3}], ["ApproveInput", "approval_id"]),
    (names.SIG_APPROVE, [{"approval_id": "nope", "by": "x"}], ["unknown approval id 'nope'"]),
    (names.SIG_REJECT, [{"reason": "no id"}], ["RejectInput", "approval_id"]),
    (names.SIG_WAKE, [{"by": "x"}], ["not sleeping"]),
    ("frobnicate", [{"text": "hi"}], ["unknown signal 'frobnicate'"]),
]


async def test_malformed_signals_are_refused_counted_and_recorded(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _wait_for_approval_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        for name, args, _ in BAD_SIGNALS:
            await handle.signal(name, args=args)
        st = await eventually(handle, lambda s: s.rejected_inputs == len(BAD_SIGNALS))
        # Nothing else changed: still waiting for the same approval, not paused.
        assert st.status == SessionStatus.WAITING_APPROVAL and not st.paused
        assert [p.approval_id for p in st.pending_approvals] == ["a1-0"]
        # Recorded while the session waits, not only when it moves on.
        rejected = await until(
            lambda: _at_least(sessionmaker, handle.id, "rejected_input", len(BAD_SIGNALS)),
            what="rejected_input events",
        )
        # The session still works.
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    assert len(rejected) == len(BAD_SIGNALS)
    for (name, _, words), ev in zip(BAD_SIGNALS, rejected, strict=True):
        assert ev.payload["signal"] == name and ev.payload["at"]
        for word in words:
            assert ev.reason is not None and word in ev.reason, (name, word, ev.reason)
    # None of it reached the transcript or the model.
    messages = await transcript(sessionmaker, handle.id)
    assert [m.content for m in messages if m.role == "user"] == ["fetch the page"]
    assert user_texts(stub.requests[-1].body) == ["fetch the page"]
    assert await events(sessionmaker, handle.id, "pause") == []


NO_ARGUMENT = object()
"""An update sent with no argument at all."""


@pytest.mark.parametrize(
    ("update", "payload", "words"),
    [
        (names.UPD_MESSAGE, {"txt": 1}, ["malformed MessageInput", "text", "Field required"]),
        (names.UPD_MESSAGE, {"text": "x" * (MAX_HUMAN_TEXT + 1)}, ["exceeds the limit"]),
        (names.UPD_MESSAGE, raw_json('"not an object"'), ["malformed MessageInput"]),
        (names.UPD_APPROVE, {"approval_id": 3}, ["malformed ApproveInput", "approval_id"]),
        (
            names.UPD_APPROVE,
            {"approval_id": "a1-0", "edited_arguments": "x"},
            ["malformed ApproveInput", "edited_arguments"],
        ),
        (names.UPD_REDIRECT, {"goal": ""}, ["empty"]),
        (names.UPD_MESSAGE, {"text": "hi", "by": "a\x00b"}, ["`by` must not contain NUL"]),
        (names.UPD_REDIRECT, {"goal": "a\x00b"}, ["goal must not contain NUL"]),
        (names.UPD_PAUSE, {"reason": "a\x00b"}, ["`reason` must not contain NUL"]),
        (names.UPD_APPROVE, {"approval_id": "a1-0", "note": "a\x00b"}, ["`note` must not"]),
        (names.UPD_PAUSE, raw_json(b"{oops"), ["malformed PauseInput"]),
        (names.UPD_WAKE, {"by": "x"}, ["not sleeping"]),
        # No argument at all: was the validator's own TypeError ("missing 1 required
        # positional argument: 'raw'"), retryable, where a signal said what was wrong.
        (names.UPD_MESSAGE, NO_ARGUMENT, ["expected one JSON object argument, got 0"]),
        (names.UPD_APPROVE, NO_ARGUMENT, ["expected one JSON object argument, got 0"]),
        (names.UPD_RESUME, NO_ARGUMENT, ["expected one JSON object argument, got 0"]),
    ],
)
async def test_malformed_updates_get_a_clear_validation_error(
    update: str,
    payload: Any,
    words: list[str],
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _wait_for_approval_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        before = await events(sessionmaker, handle.id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            args = [] if payload is NO_ARGUMENT else [payload]
            await handle.execute_update(update, args=args, result_type=Ack)
        message = str(refused.value.cause)
        for word in words:
            assert word in message, message
        st = await state(handle)
        # Refused before it reached the workflow's state: nothing counted, nothing written.
        assert st.rejected_inputs == 0 and st.status == SessionStatus.WAITING_APPROVAL
        assert [p.approval_id for p in st.pending_approvals] == ["a1-0"]
        assert await events(sessionmaker, handle.id) == before
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED


@pytest.mark.parametrize("via", ["signal", "update"])
async def test_nul_text_is_valid_and_kept_losslessly(
    via: str,
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    _wait_for_approval_then_finish(stub)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        arg = MessageInput(text=NUL_TEXT, by="nul-tester")
        if via == "signal":
            await handle.signal(names.SIG_MESSAGE, arg)
        else:
            ack = await handle.execute_update(names.UPD_MESSAGE, arg, result_type=Ack)
            assert ack.accepted
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
        result: SessionResult = await handle.result()
        assert (await state(handle)).rejected_inputs == 0

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    (said,) = [m for m in messages if m.role == "user" and m.seq > 0]
    assert said.content == NUL_TEXT and said.name == "nul-tester"
    assert NUL_TEXT in user_texts(stub.requests[1].body)
    (ev,) = await events(sessionmaker, handle.id, "human_message")
    assert ev.actor == "nul-tester"


async def test_a_nul_goal_from_a_plain_temporal_start_is_kept_exactly_and_shown_plainly(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """vigil's faces refuse a goal holding NUL; a plain Temporal start does not ask. Its
    sessions row held the goal in the record's escaped form, read by nobody as such: the
    goal's backslashes doubled in every listing (``C:\\tmp`` for ``C:\tmp``)."""
    goal = "clean C:\\tmp\x00 now"
    stub.enqueue(Reply.tool_call("finish", {"summary": "done"}))
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input(goal))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    assert messages[0].content.endswith(goal)  # exactly, in the transcript
    row = await session_row(sessionmaker, handle.id)
    assert row.goal == "clean C:\\tmp\u2400 now", row.goal


async def test_unknown_session_id_is_not_found(client: Client) -> None:
    handle = client.get_workflow_handle(f"no-such-session-{uuid.uuid4()}")
    with pytest.raises(RPCError) as signal_err:
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="hello", by="x"))
    assert signal_err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as query_err:
        await handle.query(names.QUERY_STATE)
    assert query_err.value.status == RPCStatusCode.NOT_FOUND
    with pytest.raises(RPCError) as update_err:
        await handle.execute_update(names.UPD_PAUSE, {"by": "x"}, result_type=Ack)
    assert update_err.value.status == RPCStatusCode.NOT_FOUND


async def test_bad_tool_calls_go_back_to_the_model_as_tool_errors(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_calls(
            ("write_artifact", {"name": 5, "content": "x"}),  # schema violation
            ("write_artifact", '{"name": "a.txt", "content": '),  # not JSON
            ("launch_rockets", {"count": 3}),  # unknown tool
            ("http_fetch", {"url": f"{stub.url}/page"}),  # not allowed by this policy
            ("evil\x00tool\ud800", {}),  # a name no column could store as is
        ),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    policy = ToolPolicy(allowed=["write_artifact", "finish"])
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("write", policy=policy))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.steps == 2
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    results = [m.content for m in tool_messages(messages)][:5]
    assert results[0].startswith("error: invalid arguments for write_artifact at name")
    assert results[1].startswith("error: arguments are not valid JSON")
    assert results[2].startswith("error: unknown tool 'launch_rockets'")
    # A tool outside the policy neither runs nor asks for approval.
    assert results[3] == "error: tool 'http_fetch' is not allowed in this session"
    assert results[4].startswith("error: unknown tool 'evil\\x00tool\\ud800'")
    assert messages[1].tool_calls is not None
    assert messages[1].tool_calls[4]["name"] == "evil\x00tool\ud800"  # kept exactly
    assert await events(sessionmaker, handle.id, "approval_requested") == []
    # The model saw each error as the result of its call.
    told = [m["content"] for m in stub.requests[1].body["messages"] if m["role"] == "tool"]
    assert told == results
    calls = await events(sessionmaker, handle.id, "tool_call")
    assert [c.payload["ok"] for c in calls] == [False] * 5
    assert calls[4].payload["tool"] == "evil\x00tool\ud800"


async def test_nan_and_infinity_in_tool_arguments_go_back_to_the_model(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """Python's parser takes ``NaN`` and ``Infinity``, which JSON has not: they passed the
    schema's range checks, the tool refused them, and the refusal's record (the arguments
    with them) was refused by PostgreSQL's JSON, ten attempts twice: the session failed."""
    stub.enqueue(
        Reply.tool_calls(
            ("remember", '{"content": "nan importance", "importance": NaN}'),
            ("ask_human", '{"question": "q", "extra": Infinity}'),
            ("wait_until", '{"seconds": -Infinity}'),
            ("write_artifact", '{"name": "a.txt", "content": "x", "n": [1, {"x": NaN}]}'),
            ("remember", '{"content": "big", "importance": 1e999}'),
        ),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("nan"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.steps == 2, result
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    results = [m.content for m in tool_messages(messages)][:5]
    for said, constant in zip(results, ("NaN", "Infinity", "-Infinity", "NaN"), strict=False):
        assert said == f"error: arguments are not valid JSON ({constant} is not a JSON number)"
    # A number past a float's range reads as an infinity without a word from the parser.
    assert results[4] == (
        "error: arguments are not valid JSON (a number out of a float's range (it reads as "
        "Infinity))"
    )
    told = [m["content"] for m in stub.requests[1].body["messages"] if m["role"] == "tool"]
    assert told == results
    calls = await events(sessionmaker, handle.id, "tool_call")
    assert [c.payload["ok"] for c in calls] == [False] * 5


async def test_too_many_malformed_replies_in_a_row_fail_the_session(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    bad = Reply.tool_call_raw("write_artifact", "{broken")
    good = Reply.tool_call("write_artifact", {"name": "a.txt", "content": "x"})
    # Two bad replies are tolerated and a good one resets the count; then three in a row
    # (more than max_malformed_replies=2) end the session.
    stub.enqueue(bad, bad, good, bad, bad, bad, Reply.tool_call("finish", {"summary": "no"}))
    policy = ToolPolicy(max_malformed_replies=2)
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("write", policy=policy))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.FAILED
    assert result.steps == 6 and len(stub.requests) == 6
    assert result.summary == "the model sent 3 malformed replies in a row"
    row = await session_row(sessionmaker, handle.id)
    assert (row.status, row.summary) == ("failed", result.summary)
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert messages[-1].role == "system" and "malformed replies" in messages[-1].content
    # Each bad call was answered with its error before the session ended.
    assert (
        sum(
            m.content.startswith("error: arguments are not valid JSON")
            for m in tool_messages(messages)
        )
        == 5
    )


async def _at_least(
    sm: async_sessionmaker[DbSession], sid: str, kind: str, n: int
) -> list[StoredEvent] | None:
    found = await events(sm, sid, kind)
    return found if len(found) >= n else None


async def test_model_text_with_lone_surrogates_is_kept_and_the_session_goes_on(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    # A broken model can send "\ud800" escapes: not valid UTF-8, so they must not reach
    # workflow history as is, yet the record keeps them exactly.
    odd = "half an emoji \ud83c and NUL \x00"
    stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "odd.txt", "content": odd}, content=odd),
        Reply.tool_call("finish", {"summary": f"done {odd}"}),
    )
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("write"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    assert result.summary == "done half an emoji \\ud83c and NUL \x00"
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    assert messages[1].content == odd
    assert messages[1].tool_calls is not None
    assert json.loads(messages[1].tool_calls[0]["arguments"])["content"] == odd
    # The model's next request carried the text, escaped only where JSON over UTF-8 must.
    sent = [m for m in stub.requests[1].body["messages"] if m["role"] == "assistant"]
    assert sent[0]["content"] == "half an emoji \\ud83c and NUL \x00"


async def test_finish_is_offered_whatever_tools_the_starter_allows(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A starter's ``allowed`` list without ``finish`` (``allow_tools`` in the API): each
    ``finish`` was refused as not allowed, and the session failed as if the model sent
    malformed replies. ``finish`` changes nothing outside the session: it is always offered."""
    stub.enqueue(Reply.tool_call("finish", {"summary": "done with less"}))
    policy = ToolPolicy(allowed=["write_artifact"])
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("narrow", policy=policy))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED and result.summary == "done with less"
    offered = [t["function"]["name"] for t in stub.requests[0].body["tools"]]
    assert sorted(offered) == ["finish", "write_artifact"]
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)


async def test_reading_an_artifact_that_is_not_there_says_so(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """The model was told only ``error: '../x' in session <id>``, with no word that no
    such artifact exists."""
    stub.enqueue(
        Reply.tool_call("read_artifact", {"name": "../../etc/passwd"}),
        Reply.tool_call("finish", {"summary": "nothing there"}),
    )
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("read"))
        result: SessionResult = await handle.result()

    assert result.status == SessionStatus.COMPLETED
    messages = await transcript(sessionmaker, handle.id)
    (answer,) = [m.content for m in tool_messages(messages) if m.name == "read_artifact"]
    assert answer == "error: this session has no artifact named '../../etc/passwd'", answer


async def test_a_memory_the_record_cannot_hold_is_the_models_error_without_a_traceback(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``remember`` with NUL in its content went back to the model as "tool remember
    failed: ValueError: ..." after the worker logged "tool remember crashed" with a full
    traceback, as for a bug: it is the model's input, refused."""
    stub.enqueue(
        Reply.tool_call("remember", {"content": "a\x00b"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    async with running_worker(client, _cfg(settings, stub), task_queue):
        handle = await start(client, task_queue, session_input("remember badly"))
        result: SessionResult = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    (answer,) = [m for m in tool_messages(await transcript(sessionmaker, handle.id))
                 if m.name == "remember"]  # fmt: skip
    assert answer.content.startswith("error: memory content contains NUL"), answer.content
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
