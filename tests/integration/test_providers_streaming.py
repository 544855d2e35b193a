"""Streaming providers against the LLM stub speaking both protocols' real streams: the
deltas add up to the reply, the streamed reply equals the unstreamed one, and a stream
broken mid-way is a retryable provider error. Needs no services beyond the stub."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.support.llm_stub import LLMStub, Reply
from vigil.activities.models import base
from vigil.activities.models.anthropic import AnthropicProvider
from vigil.activities.models.base import (
    ChatMessage,
    ProviderError,
    StreamingProvider,
    ToolSpec,
)
from vigil.activities.models.openai_compat import OpenAIChatProvider

KINDS = ["openai", "anthropic"]
SEARCH = ToolSpec(
    name="notes.search",
    description="Search the notes.",
    parameters={"type": "object", "properties": {"q": {"type": "string"}}},
)
ASK = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello.")]


@pytest.fixture(params=KINDS)
async def provider(
    request: pytest.FixtureRequest, stub: LLMStub
) -> AsyncIterator[StreamingProvider]:
    made: OpenAIChatProvider | AnthropicProvider
    if request.param == "openai":
        made = OpenAIChatProvider(stub.url_openai, "m", "sk-x", 5.0)
    else:
        made = AnthropicProvider(stub.url_anthropic, "m", "sk-x", 5.0)
    yield made
    await made.aclose()


async def test_deltas_add_up_to_the_reply_and_match_the_unstreamed_one(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    text = "Hello there,  streaming   world!\nsecond line "
    planned = Reply.tool_call("notes.search", {"q": "x y"}, content=text)
    stub.enqueue(planned, planned)
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)

    streamed = await provider.stream(ASK, [SEARCH], on_delta=sink, max_tokens=50)
    whole = await provider.complete(ASK, [SEARCH], max_tokens=50)  # type: ignore[attr-defined]
    assert len(deltas) > 3
    assert "".join(deltas) == streamed.content == text
    assert streamed.content == whole.content
    assert [c.name for c in streamed.tool_calls] == ["notes.search"]
    assert json.loads(streamed.tool_calls[0].arguments) == {"q": "x y"}
    assert streamed.finish_reason == whole.finish_reason == "tool_calls"
    assert streamed.usage.output_tokens == whole.usage.output_tokens > 0
    first = stub.requests[0].body
    assert first["stream"] is True
    assert "stream" not in stub.requests[1].body


async def test_streamed_replies_reuse_one_connection(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    # A provider streams on a kept-alive connection (chunked): the client's pool keeps it,
    # so a step does not pay a new connection per model call.
    stub.enqueue(Reply.text("one two three"), Reply.text("four five"), Reply.text("six"))

    async def sink(delta: str) -> None:
        return None

    for _ in range(3):
        await provider.stream(ASK, [], on_delta=sink, max_tokens=20)
    peers = {r.peer for r in stub.requests}
    assert len(stub.requests) == 3 and len(peers) == 1, peers


async def test_a_stream_left_early_is_closed_not_read_to_its_end(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    # The caller fails at the first delta of a slow stream (ten minutes to its end): the
    # connection is closed with it (only a reply's end is read for reuse), never waited on.
    slow = Reply.text("one two three four five six seven eight nine ten", chunk_delay=60.0)
    stub.enqueue(slow, Reply.text("after"))

    async def failing(delta: str) -> None:
        raise RuntimeError("the caller gave up")

    async def sink(delta: str) -> None:
        return None

    with pytest.raises(RuntimeError, match="gave up"):
        await provider.stream(ASK, [], on_delta=failing, max_tokens=20)
    after = await provider.stream(ASK, [], on_delta=sink, max_tokens=20)
    assert after.content == "after"
    first, second = (r.peer for r in stub.requests)
    assert first != second


@pytest.mark.parametrize("fault", ["drop", "error"])
async def test_a_stream_broken_midway_is_a_retryable_error(
    provider: StreamingProvider, stub: LLMStub, fault: str
) -> None:
    stub.enqueue(Reply.broken_stream("one two three four five", after=2, fault=fault))  # type: ignore[arg-type]
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)

    with pytest.raises(ProviderError) as caught:
        await provider.stream(ASK, [], on_delta=sink)
    assert caught.value.retryable
    assert "".join(deltas) == "one two"


async def test_a_chunk_that_is_not_json_fails_the_call_as_a_malformed_reply(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    # The stream goes on to its proper end after the broken chunk: skipping it would
    # return a reply with a word missing, as if nothing had happened.
    stub.enqueue(Reply.broken_stream("one two three four five", after=2, fault="garbage"))
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)

    with pytest.raises(ProviderError) as caught:
        await provider.stream(ASK, [], on_delta=sink)
    assert caught.value.retryable
    assert caught.value.message.startswith("malformed reply: event is not JSON"), caught.value
    assert "".join(deltas) == "one two"


async def test_a_server_that_ignores_stream_still_answers(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    # A compatible server that does not stream answers with one JSON body.
    kind = "openai" if isinstance(provider, OpenAIChatProvider) else "anthropic"
    body = (
        {"choices": [{"message": {"content": "plain"}, "finish_reason": "stop"}]}
        if kind == "openai"
        else {"content": [{"type": "text", "text": "plain"}], "stop_reason": "end_turn"}
    )
    stub.enqueue(Reply.json_body(body))
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)

    reply = await provider.stream(ASK, [], on_delta=sink)
    assert reply.content == "plain" and deltas == ["plain"]


async def test_an_error_in_the_stream_that_echoes_the_key_does_not_carry_it(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    """A provider's in-stream error quoting the API key: the error's text went as it was
    into the activity's failure (Temporal's history) and the worker's log; an error of
    the whole reply was redacted already."""
    said = "invalid api key sk-x given"
    stub.enqueue(Reply.broken_stream("one two three", after=1, fault="error", message=said))

    async def sink(delta: str) -> None:
        pass

    with pytest.raises(ProviderError) as caught:
        await provider.stream(ASK, [], on_delta=sink)
    assert "sk-x" not in caught.value.message, caught.value.message
    assert "invalid api key" in caught.value.message


async def test_token_counts_out_of_range_are_taken_as_none(
    provider: StreamingProvider, stub: LLMStub
) -> None:
    """A negative count lowered the session's totals under its budgets; one past 2**63
    failed the reply's write (a bigint column) on every attempt."""
    stub.enqueue(Reply.text("hi", usage=(-5, 2**70)), Reply.text("hi", usage=(-5, 2**70)))

    async def sink(delta: str) -> None:
        pass

    streamed = await provider.stream(ASK, [], on_delta=sink, max_tokens=20)
    whole = await provider.complete(ASK, [], max_tokens=20)  # type: ignore[attr-defined]
    for reply in (streamed, whole):
        assert (reply.usage.input_tokens, reply.usage.output_tokens) == (0, 0), reply.usage


@pytest.mark.parametrize("shape", ["one endless line", "many data lines", "tool arguments"])
async def test_one_event_is_held_to_a_whole_replys_bound(
    provider: StreamingProvider, stub: LLMStub, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """A stream's bound (16 times a whole reply's) counts what travels; one event is held
    whole until its end, and a line with no end, an event of many data lines, or a tool
    call's arguments in many pieces were held up to that bound (512 MiB of text, some
    2 GiB of memory). Each is now held to a whole reply's bound (here made 10,000)."""
    monkeypatch.setattr(base, "MAX_REPLY_BYTES", 10_000)
    if shape == "one endless line":
        body = b"data: " + b"x" * 50_000
    elif shape == "many data lines":
        body = b"data: " + b"data: yyyyyyyyyy\n" * 5_000
    elif isinstance(provider, OpenAIChatProvider):
        head = {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {}}]}}]}
        piece = {
            "choices": [
                {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "z" * 1000}}]}}
            ]
        }
        body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in [head] + [piece] * 20)
    else:
        start = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "c", "name": "t"},
        }
        piece = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "z" * 1000},
        }
        body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in [start] + [piece] * 20)
    stub.enqueue(Reply.raw_stream(body))

    async def sink(delta: str) -> None:
        pass

    with pytest.raises(ProviderError) as caught:
        await provider.stream(ASK, [], on_delta=sink)
    assert caught.value.message == "reply larger than 10000 bytes", caught.value
