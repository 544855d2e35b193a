"""A deterministic offline model for the demo and tests: no network, no randomness.

A script is a list of turns. Each turn is one of::

    {"say": "text"}                                   final text, finish_reason "stop"
    {"tool": "name", "args": {...}}                   one tool call
    {"tools": [{"tool": "name", "args": {...}}, ...]} several tool calls

A ``say`` turn is a reply with no tool call: the session takes it as the model's final
answer and ends (completed, the text its summary); turns after it are not played.

The turn to play is read off the conversation: its index is the number of assistant
messages already in ``messages``, or one past the turn that made the newest call still in
it (its id says which: ``call_<turn>_<n>``), whichever is more, so a window that left
earlier turns out goes on where it was. The same conversation always gets the same reply, so
an activity retried or replayed answers identically. Past the end of the script the
model calls ``finish`` with the last assistant text (or "done") as the summary.

The model reads what its tools return. When a result of its last turn is an error
(``error: ...``), it leaves the script: it calls ``finish`` with ``succeeded`` false and a
summary that says which call failed and what it returned, names what did work, and claims
nothing else; the session ends failed, and the outcome memory (a lesson) holds it. In a
``say`` text or a call's string arguments, ``{last_result}`` stands for the latest tool
result on one line: JSON in its compact form, other text with its lines joined, shortened
at a word; ``{goal}`` stands for the session's goal (its first user message) on one line.

A script from a file (``from_file``) is the file as it is at each model call: an edit
(a changed modification time or size) is read again without a worker restart, so new
sessions play the new script; a session already running plays the rest of the new
script from its current turn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vigil.activities.failures import WorkerNotReady
from vigil.activities.models.base import (
    ChatMessage,
    ModelReply,
    ToolCall,
    ToolSpec,
    Usage,
)

Turn = Mapping[str, Any]

DEMO_SCRIPT: list[dict[str, Any]] = [
    {
        "tool": "write_artifact",
        "args": {
            "name": "notes.md",
            "content": (
                "# Notes\n\n"
                "- Goal received: {goal}\n"
                "- Next: fetch https://example.com/ to check what it serves (the worker "
                "fetches only hosts VIGIL_HTTP_ALLOW names).\n"
            ),
        },
    },
    {"tool": "http_fetch", "args": {"url": "https://example.com/"}},
    {
        "say": (
            "I wrote my plan to notes.md and fetched https://example.com/; "
            "the fetch returned: {last_result}"
        )
    },
]
"""What a scripted model plays when given no script file (``VIGIL_MODEL_PROVIDER``
``scripted``, the default, or a ``scripted`` connection without ``base_url``; `vigil
demo` plays its own, ``workers/demo.py``): write an artifact, fetch a URL (a tool that
waits for human approval), then say what the fetch returned. That reply has no tool call,
so it is the final answer: the session ends there, completed, the words its summary. A
failed call (a refused approval, a host outside the allowlist) is told as a failure
instead, and ends the session failed."""

LAST_RESULT = "{last_result}"
GOAL = "{goal}"
ERROR_PREFIX = "error:"
"""How a tool's failure reads in its result (see activities/session.py run_tool)."""


class ScriptedProvider:
    """Plays a script; see the module docstring for the format."""

    def __init__(self, script: Sequence[Turn], *, model: str = "scripted-1") -> None:
        self.turns: list[dict[str, Any]] = [_validated(i, t) for i, t in enumerate(script)]
        self.model = model
        self.path: Path | None = None
        """The script's file, read again when it changes (``from_file``)."""
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def from_json(cls, text: str, *, model: str = "scripted-1") -> ScriptedProvider:
        """A provider from a JSON array of turns."""
        return cls(_script(text), model=model)

    @classmethod
    def from_file(cls, path: Path, *, model: str = "scripted-1") -> ScriptedProvider:
        """A provider playing the script file at ``path`` as it is at each model call: a
        file edited while the worker runs (its time or size changed) is read again."""
        provider = cls([], model=model)
        provider.path = path
        provider._reload()
        return provider

    def __repr__(self) -> str:
        return f"ScriptedProvider(turns={len(self.turns)}, model={self.model!r})"

    def _reload(self) -> None:
        """Read the script file again when its modification time or size changed; a
        file that cannot be read, or is no script, raises ValueError (or OSError)."""
        assert self.path is not None
        info = self.path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        turns = _script(self.path.read_text(encoding="utf-8"))
        self.turns = [_validated(i, t) for i, t in enumerate(turns)]
        # The stamp taken before the read: a write during the read is seen at the next call.
        self._stamp = stamp

    def _current(self) -> None:
        """The script as its file holds it now; a broken edit is a retryable failure of
        the call (fix the file, and the retry plays it)."""
        if self.path is None:
            return
        try:
            self._reload()
        except (OSError, ValueError) as exc:
            # The worker's setup, as a missing script at the first call is: the call
            # waits (never counted) until the file is fixed, then the retry plays it.
            raise WorkerNotReady(f"scripted model: script file {self.path}: {exc}") from exc

    async def complete(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelReply:
        self._current()
        index = _turn_index(messages)
        failure = _failure_report(messages)
        if failure is not None:
            # Said as the session's end: the goal is not done, and the session says so.
            turn: dict[str, Any] = {
                "tool": "finish",
                "args": {"summary": failure, "succeeded": False},
            }
        elif index < len(self.turns):
            turn = _filled(self.turns[index], messages)
        else:
            turn = _finish_turn(messages)
        if "say" in turn:
            content: str = turn["say"]
            calls: list[ToolCall] = []
            finish_reason = "stop"
        else:
            entries = turn.get("tools", [turn])
            content = ""
            calls = [
                ToolCall(
                    id=f"call_{index}_{i}",
                    name=entry["tool"],
                    arguments=json.dumps(entry.get("args", {})),
                )
                for i, entry in enumerate(entries)
            ]
            finish_reason = "tool_calls"
        output_text = " ".join([content, *(f"{c.name} {c.arguments}" for c in calls)])
        return ModelReply(
            content=content,
            tool_calls=calls,
            usage=Usage(
                input_tokens=sum(_message_tokens(m) for m in messages),
                output_tokens=estimate_tokens(output_text),
            ),
            finish_reason=finish_reason,
            model=self.model,
            latency_ms=0.0,
        )

    async def aclose(self) -> None:
        return None


def _turn_index(messages: Sequence[ChatMessage]) -> int:
    """The turn to play next (see the module docstring)."""
    counted = sum(1 for m in messages if m.role == "assistant")
    for message in reversed(messages):
        for call in message.tool_calls if message.role == "assistant" else ():
            mark, _, rest = call.id.partition("_")
            turn = rest.partition("_")[0]
            if mark == "call" and turn.isdigit():
                return max(counted, int(turn) + 1)
    return counted


def _script(text: str) -> list[Any]:
    """The turns of a script's JSON text (each one checked by ``_validated``)."""
    try:
        script = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"script is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ValueError("script is not valid JSON: nested too deeply") from None
    if not isinstance(script, list):
        raise ValueError("a script is a JSON array of turns")
    return script


def estimate_tokens(text: str) -> int:
    """About 4/3 tokens per whitespace-separated word: deterministic and good enough."""
    words = len(text.split())
    return math.ceil(words * 4 / 3)


def _message_tokens(message: ChatMessage) -> int:
    text = " ".join([message.content, *(f"{c.name} {c.arguments}" for c in message.tool_calls)])
    return estimate_tokens(text)


def _result_text(message: ChatMessage) -> str:
    """A tool result without the note that a human edited the call's arguments."""
    text = message.content
    if text.startswith("[run with arguments edited by ") and "\n" in text:
        text = text.split("\n", 1)[1]
    return text.strip()


def _first_line(text: str, limit: int = 200) -> str:
    line = text.splitlines()[0] if text else "(nothing)"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _one_line(text: str, limit: int = 240) -> str:
    """The whole of ``text`` on one line: JSON compact, other text with its lines (and
    runs of spaces) joined; over ``limit`` characters it is shortened at a word."""
    if not text:
        return "(nothing)"
    try:
        line = json.dumps(json.loads(text), ensure_ascii=False, separators=(", ", ": "))
    except (ValueError, RecursionError):
        line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,:;") + "…"


def _failure_report(messages: list[ChatMessage]) -> str | None:
    """What the model says when a call of its last turn failed (None: none failed)."""
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last is None:
        return None
    results = [m for m in messages[last + 1 :] if m.role == "tool"]
    failed = [m for m in results if _result_text(m).startswith(ERROR_PREFIX)]
    if not failed:
        return None
    done = [
        m.name or "a tool"
        for m in messages[:last]
        if m.role == "tool" and not _result_text(m).startswith(ERROR_PREFIX)
    ]
    done += [m.name or "a tool" for m in results if m not in failed]
    told = "; ".join(f"{m.name or 'a tool'} failed: {_first_line(_result_text(m))}" for m in failed)
    worked = ", ".join(dict.fromkeys(done)) or "nothing"
    return (
        f"I could not finish: {told}. What worked before: {worked}. "
        "I stop here; the goal is not done."
    )


def _filled(turn: dict[str, Any], messages: list[ChatMessage]) -> dict[str, Any]:
    """``turn`` with ``{last_result}`` replaced by the latest tool result on one line and
    ``{goal}`` by the session's goal (its first user message) on one line."""
    said = json.dumps(turn)
    if LAST_RESULT not in said and GOAL not in said:
        return turn
    latest = next((m for m in reversed(messages) if m.role == "tool"), None)
    told = _one_line(_result_text(latest)) if latest is not None else "(no tool result)"
    first = next((m for m in messages if m.role == "user"), None)
    goal = _one_line(first.content or "") if first is not None else "(no goal)"

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(LAST_RESULT, told).replace(GOAL, goal)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    filled: dict[str, Any] = fill(turn)
    return filled


def _finish_turn(messages: list[ChatMessage]) -> dict[str, Any]:
    last_text = next(
        (m.content for m in reversed(messages) if m.role == "assistant" and m.content),
        "done",
    )
    return {"tool": "finish", "args": {"summary": last_text}}


def _validated(index: int, turn: Any) -> dict[str, Any]:
    where = f"script turn {index}"
    if not isinstance(turn, Mapping):
        raise ValueError(f"{where}: a turn is an object, got {type(turn).__name__}")
    keys = set(turn)
    if keys == {"say"}:
        if not isinstance(turn["say"], str):
            raise ValueError(f"{where}: 'say' must be a string")
    elif keys in ({"tool"}, {"tool", "args"}):
        _check_call(where, turn)
    elif keys == {"tools"}:
        calls = turn["tools"]
        if not isinstance(calls, list) or not calls:
            raise ValueError(f"{where}: 'tools' must be a non-empty list")
        for i, call in enumerate(calls):
            if not isinstance(call, Mapping) or not set(call) <= {"tool", "args"}:
                raise ValueError(f"{where}, call {i}: expected {{'tool', 'args'}}")
            _check_call(f"{where}, call {i}", call)
    else:
        raise ValueError(
            f"{where}: expected exactly one of 'say', 'tool' (+ 'args') or 'tools', "
            f"got keys {sorted(keys)}"
        )
    # A private deep copy: later edits to the caller's script cannot change replies.
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(turn)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not JSON-serialisable: {exc}") from exc
    return copied


def _check_call(where: str, call: Mapping[str, Any]) -> None:
    if not isinstance(call.get("tool"), str) or not call["tool"]:
        raise ValueError(f"{where}: 'tool' must be a non-empty string")
    if not isinstance(call.get("args", {}), Mapping):
        raise ValueError(f"{where}: 'args' must be an object")
