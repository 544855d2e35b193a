"""A model provider that answers at once, with no HTTP and no tokens: each reply is one
call of ``http_fetch`` to a host on no allowlist, the cheapest tool call that still fails
at once and records a tool message. The step benchmarks and the round-trip tests use it
to measure vigil's own work in a step."""

from __future__ import annotations

import json
import uuid

from vigil.activities.models.base import ChatMessage, ModelReply, ToolCall, ToolSpec, Usage


class ZeroModel:
    """Answers every call with one ``http_fetch`` of ``http://{host}/``; call ids are
    ``z<messages seen>``, with ``unique_ids`` followed by a random part."""

    def __init__(self, host: str = "step.invalid", *, unique_ids: bool = False) -> None:
        self._arguments = json.dumps({"url": f"http://{host}/"})
        self._unique = unique_ids

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        call_id = f"z{len(messages)}" + (f"-{uuid.uuid4().hex[:8]}" if self._unique else "")
        return ModelReply(
            content="",
            tool_calls=[ToolCall(id=call_id, name="http_fetch", arguments=self._arguments)],
            usage=Usage(input_tokens=50, output_tokens=5),
            finish_reason="tool_calls",
            model="zero",
            latency_ms=0.001,
        )

    async def aclose(self) -> None:
        return None
