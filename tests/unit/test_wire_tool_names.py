"""MCP tools are named ``server.tool``; OpenAI and Anthropic refuse dots in function
names, so the providers send ``server__tool`` and map the model's calls back."""

from __future__ import annotations

import re

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


def test_names_that_would_meet_on_the_wire_stay_apart() -> None:
    """``w.a b`` and ``w.a_b`` both became ``w__a_b``, two long names their first 64
    characters, ``a.b`` and ``a__b`` the same ``a__b``: the provider saw one tool and the
    answer went to the last. Each name now has a wire name of its own, valid for the
    providers, and the model's calls come back to the tool it named."""
    long = "x" * 300
    names = ["w.a b", "w.a_b", "w.has space/and.dot", "w.has_space_and__dot", "a.b", "a__b"]
    names += [f"s.{long}1", f"s.{long}2", "ops.checksum"]
    tools = [ToolSpec(n, "", {}) for n in names]
    history = [ChatMessage("assistant", "", tool_calls=[ToolCall("c", n, "{}") for n in names])]
    sent, specs, back = to_wire_names(history, tools)
    wire = [t.name for t in specs]
    assert len(set(wire)) == len(names), wire
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", w) for w in wire), wire
    assert [c.name for c in sent[0].tool_calls] == wire  # the history as the tools are named
    assert "ops__checksum" in wire  # a name that meets no other keeps its plain form
    reply = ModelReply(
        content="",
        tool_calls=[ToolCall(f"r{i}", w, "{}") for i, w in enumerate(wire)],
        usage=Usage(1, 1),
        finish_reason="tool_calls",
        model="m",
        latency_ms=1.0,
    )
    assert [c.name for c in from_wire_names(reply, back).tool_calls] == names
    # The same catalog is sent the same way on every call of a session.
    assert [t.name for t in to_wire_names([], list(reversed(tools)))[1]] == list(reversed(wire))
