"""Any OpenAI-compatible chat-completions endpoint: OpenAI, Ollama, vLLM, llama.cpp."""

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
    SseMessage,
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


def _is_done(event: SseMessage) -> bool:
    """The stream's last event."""
    return event.data.strip() == "[DONE]"


class OpenAIChatProvider:
    """``POST {base_url}/chat/completions`` with function tools.

    ``base_url`` includes the version prefix, e.g. ``https://api.openai.com/v1`` or
    ``http://127.0.0.1:11434/v1``. One attempt per call: Temporal owns retries.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        client: HttpClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else make_client(timeout)

    def __repr__(self) -> str:
        # The key is deliberately absent.
        return f"OpenAIChatProvider(base_url={self.base_url!r}, model={self.model!r})"

    def _request(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        max_tokens: int | None,
        temperature: float | None,
    ) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        """(payload, headers, wire name -> catalog name) of one chat completion."""
        messages, tools, names = to_wire_names(messages, tools)
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [_message_to_wire(m) for m in messages],
        }
        if tools:
            # An empty ``tools`` array is rejected by OpenAI, so it is only sent when used.
            payload["tools"] = [_tool_to_wire(t) for t in tools]
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
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
            f"{self.base_url}/chat/completions",
            payload,
            headers=headers,
            timeout_seconds=self.timeout,
            secret=self._api_key,
        )
        return from_wire_names(_reply_from_wire(data, self.model, latency_ms, self._api_key), names)

    async def stream(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        on_delta: DeltaSink,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        """The same call with ``stream: true``: text deltas go to ``on_delta`` as they come,
        the reply is assembled from the chunks and returned whole after ``[DONE]``."""
        payload, headers, names = self._request(messages, tools, max_tokens, temperature)
        payload["stream"] = True
        streamed = StreamedText()
        payload["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        reply = _StreamedReply(self.model)
        async with aclosing(
            post_sse(
                self._client,
                f"{self.base_url}/chat/completions",
                payload,
                headers=headers,
                timeout_seconds=self.timeout,
                secret=self._api_key,
                last=_is_done,
            )
        ) as events:
            async for event in events:
                if event.event == JSON_REPLY:  # the server ignored stream: true
                    data = sse_json(event, secret=self._api_key)
                    latency_ms = (time.perf_counter() - started) * 1000.0
                    whole = _reply_from_wire(data, self.model, latency_ms, self._api_key)
                    if whole.content:
                        await on_delta(whole.content)
                    return from_wire_names(whole, names)
                if _is_done(event):
                    latency_ms = (time.perf_counter() - started) * 1000.0
                    return from_wire_names(reply.whole(latency_ms), names)
                delta = reply.add(sse_json(event, secret=self._api_key), self._api_key)
                if delta:
                    streamed.add(delta)
                    await on_delta(delta)
        raise stream_broken("the reply ended before [DONE]")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _message_to_wire(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # OpenAI's canonical form for a tools-only turn is a null content.
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool_to_wire(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _text_of(content: Any) -> str | None:
    """Message content is a string or null; some servers send a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") if isinstance(part, dict) else None for part in content]
        if all(isinstance(text, str) for text in texts):
            return "".join(str(text) for text in texts)
    return None


def _reply_from_wire(data: Any, model: str, latency_ms: float, secret: str | None) -> ModelReply:
    if not isinstance(data, dict):
        raise malformed(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise malformed("no choices in the reply")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise malformed("choice has no message")
    content = _text_of(message.get("content"))
    if content is None:
        raise malformed("message content is neither text nor null", secret=secret)

    calls: list[ToolCall] = []
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise malformed("tool_calls is not a list")
    for index, raw in enumerate(raw_calls):
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise malformed(f"tool call {index} has no function name")
        arguments = function.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            # A few compatible servers send an object; the neutral form is JSON text
            # (written without recursion: the tool layer refuses it if it is too deep).
            arguments = jsonlimits.dumps(arguments)
        call_id = raw.get("id")
        calls.append(
            ToolCall(
                id=sane_call_id(call_id, f"call_{index}"),
                name=function["name"],
                arguments=arguments,
            )
        )

    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    finish_reason = choice.get("finish_reason")
    reported_model = data.get("model")
    return ModelReply(
        content=content,
        tool_calls=calls,
        usage=Usage(
            input_tokens=token_count(usage.get("prompt_tokens")),
            output_tokens=token_count(usage.get("completion_tokens")),
        ),
        finish_reason=finish_reason
        if isinstance(finish_reason, str)
        else ("tool_calls" if calls else "stop"),
        model=reported_model if isinstance(reported_model, str) and reported_model else model,
        latency_ms=latency_ms,
    )


class _StreamedReply:
    """A chat completion assembled from its streamed chunks."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.arguments = StreamedText()
        """The size of the calls' arguments, bounded as the reply's text is."""

    def add(self, chunk: Any, secret: str | None) -> str:
        """Fold one chunk in; returns its text delta ("" when it carries none)."""
        if not isinstance(chunk, dict):
            raise malformed(f"expected a JSON object, got {type(chunk).__name__}")
        error = chunk.get("error")
        if error is not None:  # a fault reported mid-stream
            message = error.get("message") if isinstance(error, dict) else str(error)
            kind = error.get("type") if isinstance(error, dict) else None
            raise ProviderError(
                redact(str(message or "error in the stream"), secret),
                retryable=True,
                status=200,
                error_type=kind if isinstance(kind, str) else None,
            )
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return ""
        choice = choices[0]
        if not isinstance(choice, dict):
            raise malformed("a streamed choice is not an object")
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return ""
        streamed_calls = delta.get("tool_calls") or []
        if not isinstance(streamed_calls, list):
            raise malformed("streamed tool calls are not a list", secret=secret)
        for raw in streamed_calls:
            if not isinstance(raw, dict):
                raise malformed("a streamed tool call is not an object")
            index = raw.get("index", len(self.calls))
            call = self.calls.setdefault(
                index if isinstance(index, int) else len(self.calls),
                {"id": None, "name": "", "arguments": []},
            )
            if isinstance(raw.get("id"), str):
                call["id"] = raw["id"]
            function = raw.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    call["name"] += function["name"]
                if isinstance(function.get("arguments"), str):
                    self.arguments.add(function["arguments"])
                    call["arguments"].append(function["arguments"])
        text = _text_of(delta.get("content"))
        if text is None:
            raise malformed("streamed content is neither text nor null", secret=secret)
        if text:
            self.text.append(text)
        return text

    def whole(self, latency_ms: float) -> ModelReply:
        calls = [
            ToolCall(
                id=sane_call_id(call["id"], f"call_{n}"),
                name=call["name"],
                arguments="".join(call["arguments"]) or "{}",
            )
            for n, (_, call) in enumerate(sorted(self.calls.items()))
        ]
        if any(not c.name for c in calls):
            raise malformed("a streamed tool call has no function name")
        return ModelReply(
            content="".join(self.text),
            tool_calls=calls,
            usage=Usage(
                input_tokens=token_count(self.usage.get("prompt_tokens")),
                output_tokens=token_count(self.usage.get("completion_tokens")),
            ),
            finish_reason=self.finish_reason or ("tool_calls" if calls else "stop"),
            model=self.model,
            latency_ms=latency_ms,
        )
