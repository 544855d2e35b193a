"""MCP tools are named ``server.tool``; OpenAI and Anthropic refuse dots in function
names, so the providers send ``server__tool`` and map the model's calls back."""

from __future__ import annotations

from vigil.activities.models.base import (
    ChatMessage,
    ModelReply,
    ToolCall,
    ToolSpec,
    Usage,
    from_wire_names,
    to_wire_names,
)


def test_names_go_out_without_dots_and_come_back() -> None:
    tools = [ToolSpec("ops.checksum", "", {}), ToolSpec("disk_usage", "", {})]
    history = [
        ChatMessage("user", "go"),
        ChatMessage("assistant", "", tool_calls=[ToolCall("c1", "ops.checksum", "{}")]),
        ChatMessage("tool", "abc", tool_call_id="c1", name="ops.checksum"),
    ]
    sent, specs, back = to_wire_names(history, tools)
    assert [t.name for t in specs] == ["ops__checksum", "disk_usage"]
    assert sent[1].tool_calls[0].name == "ops__checksum" and sent[0] is history[0]
    reply = ModelReply(
        content="",
        tool_calls=[ToolCall("c2", "ops__checksum", "{}"), ToolCall("c3", "other.x", "{}")],
        usage=Usage(1, 1),
        finish_reason="tool_calls",
        model="m",
        latency_ms=1.0,
    )
    assert [c.name for c in from_wire_names(reply, back).tool_calls] == [
        "ops.checksum",
        "other.x",
    ]


def test_a_made_up_name_in_the_history_is_sent_in_a_safe_form() -> None:
    made_up = [ChatMessage("assistant", "", tool_calls=[ToolCall("c", "evil\x00tool\ud800", "")])]
    sent, _, _ = to_wire_names(made_up, [])
    assert sent[0].tool_calls[0].name == "evil_tool_"
