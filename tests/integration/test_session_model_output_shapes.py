"""Whatever the model sends, however deep or large, the session goes on.

Tool arguments nested hundreds or thousands of levels deep, or megabytes long, go back to
the model as a tool error; a reply body nested past what a JSON parser takes is a short,
retried provider error. Each case runs end to end against the LLM stub, over both
providers' protocols where the shape differs between them.
"""

from __future__ import annotations

import random
from typing import Literal

import pytest
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
    tool_messages,
    transcript,
)
from vigil.activities.models.base import MAX_REPLY_BYTES
from vigil.schema import names
from vigil.schema.payloads import SessionResult, SessionStatus, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

Protocol = Literal["openai", "anthropic"]
NO_APPROVAL = ToolPolicy(require_approval=[])
FINISH = Reply.tool_call("finish", {"summary": "carried on"})


def _nested(depth: int) -> str:
    """A JSON object whose one argument is ``depth`` lists deep."""
    return '{"url": ' + "[" * depth + "]" * depth + "}"


def _cfg(settings: Settings, stub: LLMStub, protocol: Protocol) -> Settings:
    url = stub.url_openai if protocol == "openai" else stub.url_anthropic
    return stub_settings(settings, url, provider=protocol)


async def _run(
    client: Client, settings: Settings, task_queue: str, goal: str
) -> tuple[str, SessionResult]:
    async with running_worker(client, settings, task_queue):
        handle = await start(client, task_queue, session_input(goal, policy=NO_APPROVAL))
        result: SessionResult = await handle.result()
    return handle.id, result


@pytest.mark.parametrize(
    ("protocol", "depth"),
    [("openai", 600), ("openai", 5000), ("anthropic", 600)],
)
async def test_deeply_nested_arguments_go_back_to_the_model_as_a_tool_error(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    protocol: Protocol,
    depth: int,
) -> None:
    stub.enqueue(Reply.tool_call_raw("http_fetch", _nested(depth)), FINISH)
    session_id, result = await _run(client, _cfg(settings, stub, protocol), task_queue, "nest")

    assert result.status == SessionStatus.COMPLETED, result.summary
    messages = await transcript(sessionmaker, session_id)
    assert_whole(messages)
    tool = tool_messages(messages)[0]
    assert tool.content.startswith("error: ") and "nested deeper than" in tool.content
    # The model saw its mistake: the next request carried the error back.
    assert len(stub.requests) == 2
    assert "nested deeper than" in stub.requests[1].raw.decode()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_reply_body_nested_past_any_parser_is_a_short_provider_error(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
    protocol: Protocol,
) -> None:
    deep = b'{"choices": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    stub.enqueue(Reply.raw(deep), FINISH)
    session_id, result = await _run(client, _cfg(settings, stub, protocol), task_queue, "deep")

    assert result.status == SessionStatus.COMPLETED, result.summary
    assert_whole(await transcript(sessionmaker, session_id))
    handle = client.get_workflow_handle(session_id)
    first = (await activity_runs(handle, names.ACT_CALL_MODEL))[0]
    assert first.attempt == 2
    assert first.last_failure == (
        "model provider transient failure 200: malformed reply: JSON nested too deeply"
    )


async def test_a_reply_body_over_the_size_limit_is_a_short_provider_error(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(Reply.text("x" * (MAX_REPLY_BYTES + 1)), FINISH)
    session_id, result = await _run(client, _cfg(settings, stub, "openai"), task_queue, "big")

    assert result.status == SessionStatus.COMPLETED, result.summary
    assert_whole(await transcript(sessionmaker, session_id))
    handle = client.get_workflow_handle(session_id)
    first = (await activity_runs(handle, names.ACT_CALL_MODEL))[0]
    assert first.attempt == 2
    assert first.last_failure == (
        f"model provider transient failure 200: reply larger than {MAX_REPLY_BYTES} bytes"
    )


async def test_megabytes_of_arguments_names_and_ids_go_back_as_short_tool_errors(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    huge_url = "http://127.0.0.1/" + "x" * 3_000_000
    huge_name = "tool" * 750_000
    finish_with_a_huge_id = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c" * 3_000_000,
                            "type": "function",
                            "function": {"name": "finish", "arguments": '{"summary": "ok"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    stub.enqueue(
        Reply.tool_calls(("http_fetch", {"url": huge_url}), (huge_name, {})),
        Reply.json_body(finish_with_a_huge_id),
    )
    session_id, result = await _run(
        client, _cfg(settings, stub, "openai"), task_queue, "long arguments"
    )

    assert result.status == SessionStatus.COMPLETED, result.summary
    messages = await transcript(sessionmaker, session_id)
    assert_whole(messages)
    fetch, unknown, finish = tool_messages(messages)
    assert fetch.content.startswith("error: invalid arguments for http_fetch at url")
    assert unknown.content.startswith("error: unknown tool 'tooltooltool")
    assert finish.content == "session finished"
    assert all(len(m.content) < 1000 for m in (fetch, unknown))


async def test_a_reply_of_megabytes_of_text_is_recorded_whole(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    rng = random.Random(7)
    words = " ".join(f"w{rng.randrange(10**9)}" for _ in range(300_000))
    stub.enqueue(Reply.text(words))
    session_id, result = await _run(client, _cfg(settings, stub, "openai"), task_queue, "talk")

    assert result.status == SessionStatus.COMPLETED, result.summary
    messages = await transcript(sessionmaker, session_id)
    assert_whole(messages)
    assert [m.content for m in messages if m.role == "assistant"] == [words]


async def test_tool_call_ids_the_record_cannot_hold_are_replaced(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    """A provider's call id holding NUL or a lone surrogate went into the result's
    ``tool_call_id`` as it was: PostgreSQL refused the row, and the write of the call's
    result failed on every attempt."""

    def reply(call_id: str, name: str, arguments: str) -> Reply:
        call = {"id": call_id, "type": "function"}
        call["function"] = {"name": name, "arguments": arguments}  # type: ignore[assignment]
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return Reply.json_body({"choices": [{"message": message, "finish_reason": "tool_calls"}]})

    stub.enqueue(
        reply("call\x00nul", "list_artifacts", "{}"),
        reply("call\ud800half", "finish", '{"summary": "ok"}'),
    )
    session_id, result = await _run(client, _cfg(settings, stub, "openai"), task_queue, "ids")

    assert result.status == SessionStatus.COMPLETED, result.summary
    messages = await transcript(sessionmaker, session_id)
    assert_whole(messages)
    listed, finish = tool_messages(messages)
    assert finish.content == "session finished"
    for m in (listed, finish):
        assert m.tool_call_id and m.tool_call_id.isprintable(), m.tool_call_id
