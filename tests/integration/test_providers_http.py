"""The HTTP providers against a real local server speaking OpenAI's and Anthropic's protocols.

Needs no services beyond the in-process LLM stub.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.support.llm_stub import LLMStub, Reply
from vigil.activities.models.anthropic import AnthropicProvider
from vigil.activities.models.base import (
    ChatMessage,
    ModelProvider,
    ProviderError,
    ToolCall,
    ToolSpec,
    Usage,
)
from vigil.activities.models.openai_compat import OpenAIChatProvider

KEY = "sk-test-Zq8s3cr3tK3y-0123456789"
MODEL = "test-model"
KINDS = ["openai", "anthropic"]

SEARCH = ToolSpec(
    name="search",
    description="Search the notes.",
    parameters={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
)
CONVERSATION = [
    ChatMessage("system", "You are careful."),
    ChatMessage("user", "Find both."),
    ChatMessage(
        "assistant",
        "Searching.",
        tool_calls=[
            ToolCall("c1", "search", '{"q": "a"}'),
            ToolCall("c2", "search", '{"q": "b"}'),
        ],
    ),
    ChatMessage("tool", "found a", tool_call_id="c1", name="search"),
    ChatMessage("tool", "found b", tool_call_id="c2", name="search"),
]


def make(kind: str, base: LLMStub, *, timeout: float = 5.0, key: str | None = KEY) -> ModelProvider:
    if kind == "openai":
        return OpenAIChatProvider(base.url_openai, MODEL, key, timeout)
    return AnthropicProvider(base.url_anthropic, MODEL, key, timeout)


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    with LLMStub() as server:
        yield server
        assert server.errors == []


@pytest.fixture(params=KINDS)
async def provider(request: pytest.FixtureRequest, stub: LLMStub) -> AsyncIterator[ModelProvider]:
    made = make(request.param, stub)
    yield made
    await made.aclose()


async def failure(provider: ModelProvider) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.complete([ChatMessage("user", "hi")], [])
    return caught.value


async def test_text_reply(provider: ModelProvider, stub: LLMStub) -> None:
    stub.enqueue(Reply.text("hello there", usage=(11, 7)))

    reply = await provider.complete([ChatMessage("user", "hi")], [])

    assert reply.content == "hello there"
    assert reply.tool_calls == []
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(11, 7)
    assert reply.model == MODEL
    assert reply.latency_ms > 0


async def test_openai_sends_tools_and_tool_messages_in_its_format(stub: LLMStub) -> None:
    stub.enqueue(Reply.tool_call("search", {"q": "c"}))
    provider = make("openai", stub)

    reply = await provider.complete(CONVERSATION, [SEARCH])
    await provider.aclose()

    assert reply.tool_calls == [ToolCall("call_stub1_0", "search", '{"q": "c"}')]
    assert reply.finish_reason == "tool_calls"
    body = stub.requests[0].body
    assert stub.requests[0].path == "/v1/chat/completions"
    assert body["model"] == MODEL
    assert "max_tokens" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the notes.",
                "parameters": SEARCH.parameters,
            },
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "Find both."},
        {
            "role": "assistant",
            "content": "Searching.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "a"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "b"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found a"},
        {"role": "tool", "tool_call_id": "c2", "content": "found b"},
    ]


async def test_anthropic_sends_tools_and_merged_tool_results_in_its_format(stub: LLMStub) -> None:
    stub.enqueue(Reply.tool_call("search", {"q": "c"}, content="One more."))
    provider = make("anthropic", stub)

    reply = await provider.complete(CONVERSATION, [SEARCH])
    await provider.aclose()

    assert reply.content == "One more."
    assert reply.tool_calls == [ToolCall("toolu_stub1_0", "search", '{"q": "c"}')]
    assert reply.finish_reason == "tool_calls"
    sent = stub.requests[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    body = sent.body
    assert body["system"] == "You are careful."
    assert body["max_tokens"] == 1024
    assert body["tools"] == [
        {"name": "search", "description": "Search the notes.", "input_schema": SEARCH.parameters}
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Find both."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Searching."},
                {"type": "tool_use", "id": "c1", "name": "search", "input": {"q": "a"}},
                {"type": "tool_use", "id": "c2", "name": "search", "input": {"q": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "found a"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "found b"},
            ],
        },
    ]


async def test_max_tokens_is_sent_when_given(provider: ModelProvider, stub: LLMStub) -> None:
    await provider.complete([ChatMessage("user", "hi")], [], max_tokens=77)

    assert stub.requests[0].body["max_tokens"] == 77


@pytest.mark.parametrize("header", ["7", "http-date"])
async def test_rate_limit_is_retryable_with_retry_after(
    provider: ModelProvider, stub: LLMStub, header: str
) -> None:
    if header == "http-date":
        when = datetime.now(UTC) + timedelta(seconds=30)
        stub.enqueue(Reply.status(429, retry_after=format_datetime(when, usegmt=True)))
    else:
        stub.enqueue(Reply.status(429, retry_after=7, message="Slow down"))

    error = await failure(provider)

    assert error.retryable and error.status == 429
    assert error.error_type == "rate_limit_error"
    assert error.retry_after is not None
    if header == "http-date":
        assert 27 <= error.retry_after <= 30
    else:
        assert error.retry_after == 7.0
        assert error.message == "Slow down"


@pytest.mark.parametrize("code", [500, 503, 529])
async def test_server_errors_are_retryable_and_tried_once(
    provider: ModelProvider, stub: LLMStub, code: int
) -> None:
    stub.enqueue(Reply.status(code), Reply.text("would succeed on a retry"))

    error = await failure(provider)

    assert error.retryable and error.status == code
    assert error.retry_after is None
    assert len(stub.requests) == 1  # the client itself never retries


async def test_anthropic_overloaded_carries_its_message(stub: LLMStub) -> None:
    stub.enqueue(Reply.status(529))
    provider = make("anthropic", stub)

    error = await failure(provider)
    await provider.aclose()

    assert (error.retryable, error.error_type, error.message) == (
        True,
        "overloaded_error",
        "Overloaded",
    )


async def test_bad_request_is_permanent_with_the_providers_message(
    provider: ModelProvider, stub: LLMStub
) -> None:
    stub.enqueue(Reply.status(400, message="bad request: messages.0.content is empty"))

    error = await failure(provider)

    assert not error.retryable
    assert error.status == 400
    assert error.message == "bad request: messages.0.content is empty"
    assert "messages.0.content is empty" in str(error)


@pytest.mark.parametrize(
    "reply", [Reply.garbage(), Reply.json_body({"unexpected": True}), Reply.json_body([1, 2])]
)
async def test_malformed_200_is_retryable(
    provider: ModelProvider, stub: LLMStub, reply: Reply
) -> None:
    stub.enqueue(reply)

    error = await failure(provider)

    assert error.retryable and error.status == 200
    assert error.message.startswith("malformed reply: ")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_hanging_server_times_out_as_retryable(stub: LLMStub, kind: str) -> None:
    stub.enqueue(Reply.hang(30))
    provider = make(kind, stub, timeout=0.3)

    # The reply hangs 30 s: a failure before that is the call's own limit (no timing
    # asserted, only that the hang did not run out).
    async with asyncio.timeout(25):
        error = await failure(provider)
    await provider.aclose()

    assert error.retryable and error.status is None
    assert "no reply within 0.3s" in error.message


@pytest.mark.parametrize("kind", KINDS)
async def test_connection_refused_is_retryable(kind: str) -> None:
    with LLMStub() as gone:
        provider = make(kind, gone, timeout=2)
    error = await failure(provider)
    await provider.aclose()

    assert error.retryable and error.status is None
    assert error.message.startswith("connection failed")


async def test_malformed_tool_arguments_pass_through_raw(
    provider: ModelProvider, stub: LLMStub
) -> None:
    stub.enqueue(Reply.tool_call_raw("search", '{"q": "unterminated'))

    reply = await provider.complete([ChatMessage("user", "hi")], [SEARCH])

    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("search", '{"q": "unterminated')]


@pytest.mark.parametrize(
    ("kind", "header", "value"),
    [("openai", "authorization", f"Bearer {KEY}"), ("anthropic", "x-api-key", KEY)],
)
async def test_the_api_key_is_sent_but_never_shown(
    stub: LLMStub, caplog: pytest.LogCaptureFixture, kind: str, header: str, value: str
) -> None:
    caplog.set_level(logging.DEBUG)
    stub.enqueue(Reply.text("ok"), Reply.status(401, message=f"Incorrect API key provided: {KEY}"))
    provider = make(kind, stub)

    await provider.complete([ChatMessage("user", "hi")], [])
    error = await failure(provider)
    await provider.aclose()

    assert stub.requests[0].headers[header] == value
    assert not error.retryable and error.status == 401
    assert "Incorrect API key provided: ***" in error.message
    assert "HTTP request: POST" in caplog.text  # the capture does see the client's logs
    shown = [caplog.text, repr(provider), str(provider), str(error), repr(error)]
    assert not [text for text in shown if KEY in text]


@pytest.mark.parametrize("kind", KINDS)
async def test_no_key_sends_no_auth_header(stub: LLMStub, kind: str) -> None:
    provider = make(kind, stub, key=None)

    await provider.complete([ChatMessage("user", "hi")], [])
    await provider.aclose()

    headers = stub.requests[0].headers
    assert "authorization" not in headers and "x-api-key" not in headers


async def test_requests_are_json_the_stub_can_read(provider: ModelProvider, stub: LLMStub) -> None:
    await provider.complete([ChatMessage("user", "héllo")], [])

    sent = stub.requests[0]
    assert json.loads(sent.raw) == sent.body
    assert sent.headers["content-type"] == "application/json"


@pytest.mark.parametrize("ids", [[None, None], ["dup", "dup"]], ids=["without ids", "one id twice"])
async def test_a_replys_calls_have_distinct_ids_and_ours_are_new_at_each_step(
    stub: LLMStub, ids: list[str | None]
) -> None:
    """A compatible server that sent no ids got ``call_0``, ``call_1`` from vigil at
    every step, and one that named two calls alike had both kept: the history sent back
    paired two results with one call, which a strict provider (a fallback connection's)
    refuses."""
    calls = [
        {"type": "function", "function": {"name": "search", "arguments": "{}"}}
        | ({} if i is None else {"id": i})
        for i in ids
    ]
    body = {
        "id": "chatcmpl-x",
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": calls},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    stub.enqueue(Reply.json_body(body), Reply.json_body(body))
    provider = make("openai", stub)
    try:
        steps = [await provider.complete([ChatMessage("user", "hi")], [SEARCH]) for _ in ids]
    finally:
        await provider.aclose()
    first, second = ([c.id for c in step.tool_calls] for step in steps)
    assert len(set(first)) == 2 and len(set(second)) == 2, (first, second)
    if ids[0] is None:
        assert not set(first) & set(second), "an id of ours is not used again"
    else:
        assert first == second == ["dup", "dup_1"]
