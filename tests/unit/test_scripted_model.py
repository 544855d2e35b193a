"""The scripted model plays its script from the conversation alone, deterministically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vigil.activities.failures import WorkerNotReady
from vigil.activities.models.base import ChatMessage, ModelReply, ToolCall
from vigil.activities.models.scripted import DEMO_SCRIPT, ScriptedProvider, estimate_tokens

GOAL = [
    ChatMessage("system", "You are a careful agent."),
    ChatMessage("user", "Take notes and check example.com"),
]


def as_assistant(reply: ModelReply) -> ChatMessage:
    return ChatMessage("assistant", reply.content, tool_calls=list(reply.tool_calls))


async def play(provider: ScriptedProvider, turns: int) -> list[ModelReply]:
    """Run an agent loop against the provider, answering every tool call with "ok"."""
    messages = list(GOAL)
    replies = []
    for _ in range(turns):
        reply = await provider.complete(messages, [])
        replies.append(reply)
        messages.append(as_assistant(reply))
        for call in reply.tool_calls:
            messages.append(ChatMessage("tool", "ok", tool_call_id=call.id, name=call.name))
    return replies


async def test_demo_script_writes_fetches_and_says_what_it_got() -> None:
    replies = await play(ScriptedProvider(DEMO_SCRIPT), len(DEMO_SCRIPT))

    first, second, third = replies
    assert [c.name for c in first.tool_calls] == ["write_artifact"]
    assert json.loads(first.tool_calls[0].arguments)["name"] == "notes.md"
    assert first.finish_reason == "tool_calls"
    assert second.tool_calls == [
        ToolCall("call_1_0", "http_fetch", json.dumps({"url": "https://example.com/"}))
    ]
    # The final answer, quoting the fetch: a reply without a tool call ends the session.
    assert third.tool_calls == [] and third.finish_reason == "stop"
    assert third.content.endswith("the fetch returned: ok")


def test_no_turn_of_the_demo_script_follows_a_say() -> None:
    # A say turn ends the session: a turn after it would never be played.
    says = [i for i, turn in enumerate(DEMO_SCRIPT) if "say" in turn]
    assert all(i == len(DEMO_SCRIPT) - 1 for i in says), says


async def test_same_conversation_gets_an_identical_reply() -> None:
    provider = ScriptedProvider(DEMO_SCRIPT)
    history = [*GOAL, ChatMessage("assistant", "", tool_calls=[ToolCall("x", "y", "{}")])]

    assert await provider.complete(history, []) == await provider.complete(history, [])
    assert await ScriptedProvider(DEMO_SCRIPT).complete(history, []) == await provider.complete(
        history, []
    )


async def test_turn_index_counts_assistant_messages_only() -> None:
    provider = ScriptedProvider([{"say": "zero"}, {"say": "one"}])
    many_users = [ChatMessage("user", f"message {i}") for i in range(5)]

    assert (await provider.complete(many_users, [])).content == "zero"
    with_one_answer = [*many_users, ChatMessage("assistant", "zero")]
    assert (await provider.complete(with_one_answer, [])).content == "one"


async def test_a_window_that_dropped_earlier_turns_goes_on_from_its_calls() -> None:
    """The context window left out earlier turns (a long message pushed them out): the
    turn is read off the calls still in it, so the script goes on instead of starting
    again from its first turn (which repeated the script for ever)."""
    script = [{"tool": "note", "args": {"n": n}} for n in range(4)]
    provider = ScriptedProvider(script)
    messages = list(GOAL)
    for _ in range(3):
        reply = await provider.complete(messages, [])
        messages.append(as_assistant(reply))
        messages += [ChatMessage("tool", "ok", tool_call_id=c.id) for c in reply.tool_calls]
    window = [GOAL[0], ChatMessage("user", "x" * 50), *messages[-2:]]  # the third turn only
    reply = await provider.complete(window, [])
    assert reply.tool_calls == [ToolCall("call_3_0", "note", '{"n": 3}')]


async def test_several_tools_in_one_turn_get_deterministic_ids() -> None:
    script = [
        {"say": "thinking"},
        {"tools": [{"tool": "a", "args": {"n": 1}}, {"tool": "b"}]},
    ]
    replies = await play(ScriptedProvider(script), 2)

    assert replies[1].tool_calls == [
        ToolCall("call_1_0", "a", '{"n": 1}'),
        ToolCall("call_1_1", "b", "{}"),
    ]


async def test_past_the_end_it_finishes_with_the_last_assistant_text() -> None:
    replies = await play(ScriptedProvider([{"say": "all good"}, {"tool": "noop"}]), 3)

    assert replies[2].tool_calls == [
        ToolCall("call_2_0", "finish", json.dumps({"summary": "all good"}))
    ]


async def test_an_empty_script_finishes_at_once_with_done() -> None:
    reply = await ScriptedProvider([]).complete(list(GOAL), [])

    assert reply.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [
        ("finish", {"summary": "done"})
    ]


async def test_usage_is_a_word_count_estimate() -> None:
    provider = ScriptedProvider([{"say": "one two three"}])
    short = await provider.complete([ChatMessage("user", "hi")], [])
    long = await provider.complete([ChatMessage("user", "hi " * 300)], [])

    assert short.usage.output_tokens == estimate_tokens("one two three") == 4
    assert short.usage.input_tokens == 2
    assert long.usage.input_tokens == 400
    assert short.latency_ms == 0.0 and short.model == "scripted-1"


async def test_from_json_loads_a_script() -> None:
    text = json.dumps([{"tool": "search", "args": {"q": "vigil"}}, {"say": "found it"}])
    replies = await play(ScriptedProvider.from_json(text, model="mine"), 2)

    assert replies[0].tool_calls == [ToolCall("call_0_0", "search", '{"q": "vigil"}')]
    assert replies[1].content == "found it"
    assert replies[1].model == "mine"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"say": "an object, not a list"}',
        '[{"say": "x", "tool": "y"}]',
        '[{"speak": "x"}]',
        '[{"say": 3}]',
        '[{"tool": ""}]',
        '[{"tool": "t", "args": [1]}]',
        '[{"tools": []}]',
        '[{"tools": [{"tool": "t", "extra": 1}]}]',
        '["say hi"]',
        "[" * 5000,  # deeper than Python's parser goes: a RecursionError got out
    ],
)
def test_invalid_scripts_are_refused_up_front(text: str) -> None:
    with pytest.raises(ValueError, match="script"):
        ScriptedProvider.from_json(text)


async def test_a_script_file_edited_while_running_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps([{"say": "old"}]), encoding="utf-8")
    provider = ScriptedProvider.from_file(path)
    hello = [ChatMessage("user", "hi")]
    assert (await provider.complete(hello, [])).content == "old"

    path.write_text(json.dumps([{"say": "new"}]), encoding="utf-8")
    os.utime(path, ns=(1, 1))  # the same size: the changed time is enough
    assert (await provider.complete(hello, [])).content == "new"

    path.write_text("[{not json", encoding="utf-8")  # a broken edit: retry once fixed
    with pytest.raises(WorkerNotReady, match="script file"):  # waited out, never counted
        await provider.complete(hello, [])
    path.write_text(json.dumps([{"say": "fixed"}]), encoding="utf-8")
    assert (await provider.complete(hello, [])).content == "fixed"


def test_a_missing_or_broken_script_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ScriptedProvider.from_file(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text('[{"speak": "x"}]', encoding="utf-8")
    with pytest.raises(ValueError, match="script turn 0"):
        ScriptedProvider.from_file(tmp_path / "bad.json")


async def test_the_script_is_copied_so_later_edits_change_nothing() -> None:
    script = [{"tool": "t", "args": {"k": "before"}}]
    provider = ScriptedProvider(script)
    script[0]["args"]["k"] = "after"

    reply = await provider.complete([], [])
    assert json.loads(reply.tool_calls[0].arguments) == {"k": "before"}


async def test_a_failed_call_is_told_and_nothing_else_is_claimed() -> None:
    provider = ScriptedProvider(DEMO_SCRIPT)
    messages = list(GOAL)
    first = await provider.complete(messages, [])
    messages += [
        as_assistant(first),
        ChatMessage(
            "tool", "stored artifact 'notes.md'", tool_call_id="call_0_0", name="write_artifact"
        ),
    ]
    second = await provider.complete(messages, [])
    assert [c.name for c in second.tool_calls] == ["http_fetch"]
    messages += [
        as_assistant(second),
        ChatMessage(
            "tool",
            "error: host 'example.com' is not on the allowlist",
            tool_call_id="call_1_0",
            name="http_fetch",
        ),
    ]

    third = await provider.complete(messages, [])

    # finish, not succeeded: the session ends failed with this as its summary (and its
    # outcome memory, a lesson).
    [call] = third.tool_calls
    args = json.loads(call.arguments)
    assert call.name == "finish" and args["succeeded"] is False, call
    summary = args["summary"]
    assert "http_fetch failed: error: host 'example.com' is not on the allowlist" in summary
    assert "What worked before: write_artifact" in summary
    assert "fetched" not in summary and "the goal is not done" in summary


async def test_a_rejected_edited_or_later_error_is_read_past_the_edit_note() -> None:
    provider = ScriptedProvider([{"tool": "http_fetch", "args": {"url": "u"}}, {"say": "ok"}])
    first = await provider.complete(list(GOAL), [])
    edited = '[run with arguments edited by ana: {"url": "v"}]\nerror: HTTP refused'
    messages = [
        *GOAL,
        as_assistant(first),
        ChatMessage("tool", edited, tool_call_id="call_0_0", name="http_fetch"),
    ]

    reply = await provider.complete(messages, [])

    summary = json.loads(reply.tool_calls[0].arguments)["summary"]
    assert "http_fetch failed: error: HTTP refused" in summary
    assert "What worked before: nothing" in summary


async def test_say_and_arguments_quote_the_last_result() -> None:
    script = [
        {"tool": "http_fetch", "args": {"url": "u"}},
        {"say": "it said: {last_result}"},
        {"tool": "finish", "args": {"summary": "fetched: {last_result}"}},
    ]
    provider = ScriptedProvider(script)
    first = await provider.complete(list(GOAL), [])
    messages = [
        *GOAL,
        as_assistant(first),
        ChatMessage("tool", "HTTP 200 text/html\nbody", tool_call_id="call_0_0", name="x"),
    ]
    said = await provider.complete(messages, [])
    assert said.content == "it said: HTTP 200 text/html body"
    messages.append(as_assistant(said))
    finished = await provider.complete(messages, [])
    assert json.loads(finished.tool_calls[0].arguments) == {
        "summary": "fetched: HTTP 200 text/html body"
    }
    # The script itself is untouched: the same turn fills in from another conversation.
    assert script[1] == {"say": "it said: {last_result}"}


async def test_say_and_arguments_quote_the_goal() -> None:
    script = [
        {"tool": "write_artifact", "args": {"name": "n.md", "content": "for: {goal}"}},
        {"say": "done with {goal}"},
    ]
    provider = ScriptedProvider(script)
    first = await provider.complete(list(GOAL), [])
    assert json.loads(first.tool_calls[0].arguments)["content"] == (
        "for: Take notes and check example.com"
    )
    messages = [
        *GOAL,
        as_assistant(first),
        ChatMessage("tool", "wrote n.md", tool_call_id="call_0_0", name="write_artifact"),
    ]
    said = await provider.complete(messages, [])
    assert said.content == "done with Take notes and check example.com"
    assert script[1] == {"say": "done with {goal}"}


async def _quoted(result: str) -> str:
    provider = ScriptedProvider([{"tool": "count", "args": {}}, {"say": "{last_result}"}])
    first = await provider.complete(list(GOAL), [])
    tool = ChatMessage("tool", result, tool_call_id="call_0_0", name="count")
    return (await provider.complete([*GOAL, as_assistant(first), tool], [])).content


async def test_last_result_quotes_a_multi_line_json_result_whole_on_one_line() -> None:
    result = json.dumps({"levels": 3, "names": ["debug", "info", "error"]}, indent=2)
    assert "\n" in result
    assert await _quoted(result) == '{"levels": 3, "names": ["debug", "info", "error"]}'


async def test_last_result_joins_lines_and_shortens_at_a_word() -> None:
    assert await _quoted("HTTP 200 text/plain\n\n  first line\n second") == (
        "HTTP 200 text/plain first line second"
    )
    long = " ".join(f"word{n}" for n in range(200))
    quoted = await _quoted(long)
    assert quoted.endswith("…") and len(quoted) <= 300
    assert quoted[:-1].rstrip().split(" ")[-1] in long.split(" ")  # never cut mid-word
