"""The size limits of human input, shared by the workflow and the faces that send it.

The workflow refuses input over these limits, but Temporal has already written the signal
into history by then; the client and the CLI check the same limits before sending, so
an oversized payload never reaches Temporal from vigil's own faces. Pure code: workflow
code imports it through the sandbox.
"""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC, datetime

from pydantic import BaseModel

from vigil.schema import jsonlimits
from vigil.schema.jsonlimits import MAX_ARGUMENT_DEPTH
from vigil.schema.payloads import (
    MAX_CONTEXT_MESSAGES,
    MAX_HUMAN_TEXT,
    ApproveInput,
    Budget,
    MessageInput,
    RedirectInput,
    StartSessionInput,
)

MAX_ACTOR = 200
"""`by`: who acted, stored as an identifier."""
MAX_ARGUMENTS_JSON = MAX_HUMAN_TEXT
"""An approval's edited tool arguments, as JSON."""
MAX_QUEUED_BYTES = 512 * 1024
"""Messages waiting for the next step, all together, as JSON (``queued_size``): they are
carried across continue-as-new, whose input must stay far below Temporal's 2 MB payload
limit whatever the characters (NUL is 6 bytes in JSON)."""
MAX_SYSTEM_PROMPT = 2 * MAX_HUMAN_TEXT
"""A session's system prompt: it travels in every run's start input."""


MAX_AGENT_ID = 200


_UNSEEN_IN_IDS = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than ' '",
}
"""What an agent id may not hold, by Unicode category: what cannot be seen, or reads as
something else (a no-break space as a space). Unassigned code points are not among them:
which those are depends on the Unicode version of the Python that checks."""
_JOINERS = {"\u200c", "\u200d"}
"""Format characters that spell words (Persian, Indic scripts) and emoji sequences."""


def agent_id_problem(agent_id: str) -> str | None:
    """Why no new agent may have ``agent_id``, or None: the length a session's agent id
    has, and no character that cannot be seen (``o\u200bps`` was shown as ``ops``). The
    joiners and emoji tag characters, format characters that spell, are taken."""
    if not 0 < len(agent_id) <= MAX_AGENT_ID:
        return f"an agent id is 1 to {MAX_AGENT_ID} characters, not {len(agent_id)}"
    for c in agent_id:
        what = _UNSEEN_IN_IDS.get(unicodedata.category(c))
        if what is None or c == " " or c in _JOINERS or 0xE0020 <= ord(c) <= 0xE007F:
            continue
        name = unicodedata.name(c, "NUL" if c == "\x00" else "")
        shown = f"U+{ord(c):04X}" + (f" {name}" if name else "")
        return f"agent id {agent_id!r} holds {shown}, {what}, which an agent id may not hold"
    return None


def text_error(text: str, what: str = "text") -> str | None:
    if len(text) > MAX_HUMAN_TEXT:
        return f"{what} of {len(text)} characters exceeds the limit of {MAX_HUMAN_TEXT}"
    if not text.strip():
        return f"{what} is empty"
    return None


def queued_size(text: str) -> int:
    """An upper bound of the bytes ``text`` takes in a JSON payload (every character
    outside ASCII, and every control character, escaped)."""
    return len(json.dumps(text))


def start_error(goal: str, system_prompt: str | None) -> str | None:
    """Why a session's start input is refused for its size (or a NUL in its goal); None
    when it is acceptable."""
    if len(goal) > MAX_HUMAN_TEXT:
        return f"goal of {len(goal)} characters exceeds the limit of {MAX_HUMAN_TEXT}"
    if "\x00" in goal:
        # The session's row holds its goal as plain text, where NUL cannot be kept.
        return "goal must not contain NUL characters"
    if not goal.strip():
        return "goal is empty"
    if system_prompt is not None and len(system_prompt) > MAX_SYSTEM_PROMPT:
        return (
            f"system prompt of {len(system_prompt)} characters exceeds the limit of "
            f"{MAX_SYSTEM_PROMPT}"
        )
    return None


MAX_BUDGET_SECONDS = 100 * 365 * 24 * 3600
"""The longest wall-clock budget (``max_seconds``, a ``deadline`` this far ahead) and the
longest approval or question timeout a session starts with: 100 years. The workflow itself
copes with any number (workflows/times.py); vigil's faces refuse more than this."""
MAX_BUDGET_COUNT = 2**53
"""The largest step or token budget: larger integers do not survive JSON readers that
hold numbers as doubles (JavaScript, Temporal UI)."""
MAX_HEARTBEAT_SECONDS = 24 * 3600
"""The longest heartbeat a session's calls may have (a lost worker noticed within a day)."""


def seconds_problem(seconds: float, *, positive: bool = False) -> str | None:
    """Why a number of seconds is refused as a budget or a timeout; None when it is not."""
    if math.isnan(seconds):
        return "not a number"
    if seconds < 0 or (positive and seconds == 0):
        return f"{seconds:g} is not {'positive' if positive else 'zero or more'}"
    if seconds > MAX_BUDGET_SECONDS:
        return f"{seconds:g} seconds exceeds the limit of {MAX_BUDGET_SECONDS} (100 years)"
    return None


def budget_problem(budget: Budget, now: datetime | None = None) -> tuple[str, str] | None:
    """(field, why) of the first number of a session's budget refused at start (by the
    API, the CLI, the client and agent files); None when all are acceptable. ``now``:
    check ``deadline`` against it."""
    if budget.max_seconds is not None:
        why = seconds_problem(budget.max_seconds, positive=True)  # 0: no time at all
        if why is not None:
            return "budget.max_seconds", why
    for name in ("max_steps", "max_tokens"):
        count = getattr(budget, name)
        if count is not None and count > MAX_BUDGET_COUNT:
            return f"budget.{name}", f"{count} exceeds the limit of {MAX_BUDGET_COUNT} (2**53)"
        if count is not None and count < 1:  # the session could take no step
            return f"budget.{name}", f"{count} is not 1 or more"
    cost = budget.max_cost_usd
    if cost is not None and not math.isfinite(cost):
        return "budget.max_cost_usd", f"{cost} is not a finite number"
    if cost is not None and cost <= 0:
        return "budget.max_cost_usd", f"{cost:g} is not positive"
    if budget.deadline is not None and now is not None:
        deadline = budget.deadline
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)  # (a deadline is UTC: the workflow's too)
        if (deadline - now).total_seconds() > MAX_BUDGET_SECONDS:
            return "budget.deadline", f"{deadline.isoformat()} is more than 100 years ahead"
    return None


def session_input_error(arg: StartSessionInput, now: datetime | None = None) -> str | None:
    """Why a session's start input is refused for its numbers (its budget, its policy's
    timeouts, its heartbeat) as ``field: why``; None when they are acceptable. Sizes are
    :func:`start_error`'s."""
    found = budget_problem(arg.budget, now)
    for name in ("approval_timeout_seconds", "ask_human_timeout_seconds"):
        if found is None:
            why = seconds_problem(getattr(arg.policy, name), positive=True)
            found = None if why is None else (f"policy.{name}", why)
    idle = arg.conversation_idle_seconds
    if found is None and idle is not None:
        why = seconds_problem(idle, positive=True)
        found = None if why is None else ("conversation_idle_seconds", why)
    beat = arg.heartbeat_seconds
    if found is None and not 0 <= beat <= MAX_HEARTBEAT_SECONDS:  # (NaN too; 0: none)
        found = "heartbeat_seconds", f"{beat:g} is not from 0 to {MAX_HEARTBEAT_SECONDS}"
    # 0 or less handed over to a new run before every step, for ever, taking none.
    if found is None and arg.steps_per_run < 1:
        found = "steps_per_run", f"{arg.steps_per_run} is not 1 or more"
    # As an agent's definition bounds its context's messages (0 read as no bound at all).
    if found is None and not 1 <= arg.context_messages <= MAX_CONTEXT_MESSAGES:
        found = (
            "context_messages",
            f"{arg.context_messages} is not from 1 to {MAX_CONTEXT_MESSAGES}",
        )
    return None if found is None else f"{found[0]}: {found[1]}"


def line_text_error(value: BaseModel) -> str | None:
    """Why a control payload is refused for a NUL in its one-line text (a redirect's goal,
    a reason, a note), which the record keeps in plain columns where NUL cannot be kept, as
    it keeps a start's goal and ``by``; None when it holds none. A message's text, kept
    exactly in the conversation, may hold NUL."""
    if isinstance(value, RedirectInput) and "\x00" in value.goal:
        return "goal must not contain NUL characters"
    for name in ("note", "reason"):
        text = getattr(value, name, None)
        if isinstance(text, str) and "\x00" in text:
            return f"`{name}` must not contain NUL characters"
    return None


def input_error(value: BaseModel) -> str | None:
    """Why a control payload (approve, reject, pause, resume, message, redirect, wake) is
    refused for its size or shape; None when it is acceptable."""
    by = getattr(value, "by", "")
    if isinstance(by, str) and len(by) > MAX_ACTOR:
        return f"`by` of {len(by)} characters exceeds the limit of {MAX_ACTOR}"
    if isinstance(by, str) and "\x00" in by:
        # `by` names a person and is stored as an identifier, not as text: NUL is
        # refused here (message text may hold NUL; it is stored losslessly).
        return "`by` must not contain NUL characters"
    if isinstance(value, MessageInput):
        return text_error(value.text)
    if isinstance(value, RedirectInput):
        return text_error(value.goal)
    for name in ("note", "reason"):
        text = getattr(value, name, None)
        if isinstance(text, str) and len(text) > MAX_HUMAN_TEXT:
            return f"`{name}` of {len(text)} characters exceeds the limit of {MAX_HUMAN_TEXT}"
    if isinstance(value, ApproveInput) and value.edited_arguments is not None:
        if jsonlimits.depth(value.edited_arguments, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
            return f"edited_arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels"
        size = len(jsonlimits.dumps(value.edited_arguments))
        if size > MAX_ARGUMENTS_JSON:
            return f"edited_arguments of {size} bytes exceed the limit of {MAX_ARGUMENTS_JSON}"
    return None
