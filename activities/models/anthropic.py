"""Anthropic's Messages API (``POST /v1/messages``)."""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

from vigil.activities.models.base import (
    JSON_REPLY,
    ChatMessage,
    DeltaSink,
    ModelReply,
    ProviderError,
    StreamedText,
    ToolCall,
    ToolSpec,
    Usage,
    from_wire_names,
    make_client,
    malformed,
    post_json,
    post_sse,
    redact,
    sane_call_id,
    sse_json,
    stream_broken,
    to_wire_names,
    token_count,
)
from vigil.activities.models.http import HttpClient
from vigil.schema import jsonlimits
from vigil.schema.jsonlimits import MAX_ARGUMENT_DEPTH

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

# Anthropic's stop reasons in the neutral (OpenAI) vocabulary; others pass through.
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}


class AnthropicProvider:
    """Claude through the Messages API. One attempt per call: Temporal owns retries.

    ``base_url`` is the host without the version, e.g. ``https://api.anthropic.com``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        client: HttpClient | None = None,
        *,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.default_max_tokens = default_max_tokens
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else make_client(timeout)

    def __repr__(self) -> str:
        # The key is deliberately absent.
        return f"AnthropicProvider(base_url={self.base_url!r}, model={self.model!r})"

    def _request(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        max_tokens: int | None,
        temperature: float | None,
    ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        """(payload, headers, wire name -> catalog name) of one Messages call."""
        messages, tools, names = to_wire_names(messages, tools)
        system, wire_messages = messages_to_wire(messages)
        payload: dict[str, Any] = {
            "model": self.model,
            # Required by the API.
            "max_tokens": max_tokens if max_tokens is not None else self.default_max_tokens,
            "messages": wire_messages,
        }
        if system:
            payload["system"] = system
        if temperature is not None:
            payload["temperature"] = temperature
        if tools:
            payload["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return payload, headers, names

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        payload, headers, names = self._request(messages, tools, max_tokens, temperature)
        data, latency_ms = await post_json(
            self._client,
            f"{self.base_url}/v1/messages",
            payload,
            headers=headers,
            timeout_seconds=self.timeout,
            secret=self._api_key,
        )
        return from_wire_names(_reply_from_wire(data, self.model, latency_ms), names)

    async def stream(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        on_delta: DeltaSink,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        """The same call with ``stream: true``: ``text_delta``s go to ``on_delta``, the
        reply is assembled from the events and returned whole at ``message_stop``."""
        payload, headers, names = self._request(messages, tools, max_tokens, temperature)
        payload["stream"] = True
        streamed = StreamedText()
        started = time.perf_counter()
        reply = _StreamedMessage(self.model)
        async with aclosing(
            post_sse(
                self._client,
                f"{self.base_url}/v1/messages",
                payload,
                headers=headers,
                timeout_seconds=self.timeout,
                secret=self._api_key,
                last=lambda event: event.event == "message_stop",
            )
        ) as events:
            async for event in events:
                if event.event == JSON_REPLY:
                    latency_ms = (time.perf_counter() - started) * 1000.0
                    whole = _reply_from_wire(
                        sse_json(event, secret=self._api_key), self.model, latency_ms
                    )
                    if whole.content:
                        await on_delta(whole.content)
                    return from_wire_names(whole, names)
                delta, done = reply.add(sse_json(event, secret=self._api_key), self._api_key)
                if delta:
                    streamed.add(delta)
                    await on_delta(delta)
                if done:
                    latency_ms = (time.perf_counter() - started) * 1000.0
                    return from_wire_names(reply.whole(latency_ms), names)
        raise stream_broken("the reply ended before message_stop")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def messages_to_wire(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """Neutral messages -> (top-level system prompt, Anthropic ``messages``).

    System messages are joined into the top-level ``system``. Tool results become
    ``tool_result`` blocks of a ``user`` message, and consecutive messages of the same
    wire role are merged, because the API wants user and assistant turns to alternate
    and all results for one assistant turn in the single user message that follows it.
    """
    system_parts: list[str] = []
    wire: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            if message.content:
                system_parts.append(message.content)
            continue
        role, blocks = _blocks_of(message)
        if not blocks:
            # The API rejects empty text blocks and empty turns.
            continue
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})
    return "\n\n".join(system_parts), wire


def _blocks_of(message: ChatMessage) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        return "user", [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    if message.role == "assistant":
        for call in message.tool_calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": _input_of(call.arguments),
                }
            )
    return message.role, blocks


def _input_of(arguments: str) -> dict[str, Any]:
    """``tool_use.input`` must be an object. Arguments the model once sent malformed are
    kept verbatim under one key, so the model can still see what it sent."""
    try:
        value = (
            jsonlimits.loads(arguments, MAX_ARGUMENT_DEPTH, finite=True)
            if arguments.strip()
            else {}
        )
    except ValueError:  # not JSON, or nested too deeply to send back as an object
        return {"_unparsed_arguments": arguments}
    if isinstance(value, dict):
        return value
    return {"_unparsed_arguments": arguments}


def _reply_from_wire(data: Any, model: str, latency_ms: float) -> ModelReply:
    if not isinstance(data, dict):
        raise malformed(f"expected a JSON object, got {type(data).__name__}")
    content = data.get("content")
    if not isinstance(content, list):
        raise malformed("no content blocks in the reply")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            raise malformed(f"content block {index} is not an object")
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise malformed(f"text block {index} has no text")
            texts.append(text)
        elif kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise malformed(f"tool_use block {index} lacks a name or id")
            raw_input = block.get("input", {})
            # A string is passed through untouched: validating arguments is the tool
            # layer's job, and it reports bad ones back to the model (written without
            # recursion: input nested too deeply is refused there too).
            arguments = raw_input if isinstance(raw_input, str) else jsonlimits.dumps(raw_input)
            calls.append(
                ToolCall(id=sane_call_id(call_id, f"toolu_{index}"), name=name, arguments=arguments)
            )
        # Other block types (thinking, ...) carry nothing the agent loop acts on.
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    stop_reason = data.get("stop_reason")
    if isinstance(stop_reason, str):
        finish_reason = _FINISH.get(stop_reason, stop_reason)
    else:
        finish_reason = "tool_calls" if calls else "stop"
    reported_model = data.get("model")
    return ModelReply(
        content="\n\n".join(texts),
        tool_calls=calls,
        usage=Usage(
            input_tokens=token_count(usage.get("input_tokens")),
            output_tokens=token_count(usage.get("output_tokens")),
        ),
        finish_reason=finish_reason,
        model=reported_model if isinstance(reported_model, str) and reported_model else model,
        latency_ms=latency_ms,
    )


# Errors Anthropic reports inside a stream; all but a bad request are worth a retry.
_PERMANENT_STREAM_ERRORS = {"invalid_request_error", "authentication_error", "permission_error"}


class _StreamedMessage:
    """A Messages reply assembled from its streamed events."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.blocks: dict[int, dict[str, Any]] = {}
        self.arguments = StreamedText()
        """The size of the tool calls' input, bounded as the reply's text is."""
        self.texts = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None

    def add(self, data: Any, secret: str | None = None) -> tuple[str, bool]:
        """Fold one event in; returns (its text delta, whether the message is complete).
        ``secret``: the API key, kept out of an error's text."""
        if not isinstance(data, dict):
            raise malformed(f"expected a JSON object, got {type(data).__name__}")
        kind = data.get("type")
        if kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            raise ProviderError(
                redact(str(error.get("message") or "error in the stream"), secret),
                retryable=error_type not in _PERMANENT_STREAM_ERRORS,
                status=200,
                error_type=error_type,
            )
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("model"), str) and message["model"]:
                    self.model = message["model"]
                usage = message.get("usage")
                if isinstance(usage, dict):
                    self.input_tokens = token_count(usage.get("input_tokens"))
                    self.output_tokens = token_count(usage.get("output_tokens"))
            return "", False
        if kind == "content_block_start":
            block = data.get("content_block")
            index = data.get("index")
            if not isinstance(block, dict) or not isinstance(index, int):
                raise malformed("content_block_start without a block or index")
            if block.get("type") == "text":
                first = block.get("text")
                text = first if isinstance(first, str) else ""
                self.blocks[index] = {"type": "text", "text": [text]}
                # Blocks are joined as the whole reply joins them, so the deltas add up.
                joined = ("\n\n" if self.texts else "") + text
                self.texts += 1
                return joined, False
            if block.get("type") == "tool_use":
                self.blocks[index] = {
                    "type": "tool_use",
                    "id": block.get("id"),
                    "name": block.get("name"),
                    "json": [],
                }
            return "", False
        if kind == "content_block_delta":
            delta = data.get("delta")
            index = data.get("index")
            block = self.blocks.get(index) if isinstance(index, int) else None
            if not isinstance(delta, dict) or block is None:
                return "", False
            if delta.get("type") == "text_delta" and block["type"] == "text":
                piece = delta.get("text")
                if not isinstance(piece, str):
                    raise malformed("text_delta without text")
                block["text"].append(piece)
                return piece, False
            if delta.get("type") == "input_json_delta" and block["type"] == "tool_use":
                part = delta.get("partial_json")
                if isinstance(part, str):
                    self.arguments.add(part)
                    block["json"].append(part)
            return "", False
        if kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
            usage = data.get("usage")
            if isinstance(usage, dict) and "output_tokens" in usage:
                self.output_tokens = token_count(usage.get("output_tokens"))
            return "", False
        return "", kind == "message_stop"  # ping, content_block_stop: nothing to fold

    def whole(self, latency_ms: float) -> ModelReply:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block["type"] == "text":
                texts.append("".join(block["text"]))
                continue
            if not isinstance(block["name"], str) or not isinstance(block["id"], str):
                raise malformed(f"tool_use block {index} lacks a name or id")
            calls.append(
                ToolCall(
                    id=sane_call_id(block["id"], f"toolu_{index}"),
                    name=block["name"],
                    arguments="".join(block["json"]) or "{}",
                )
            )
        if self.stop_reason is not None:
            finish_reason = _FINISH.get(self.stop_reason, self.stop_reason)
        else:
            finish_reason = "tool_calls" if calls else "stop"
        return ModelReply(
            content="\n\n".join(texts),
            tool_calls=calls,
            usage=Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens),
            finish_reason=finish_reason,
            model=self.model,
            latency_ms=latency_ms,
        )
