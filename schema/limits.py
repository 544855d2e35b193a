"""The size limits of human input, shared by the workflow and the faces that send it.

The workflow refuses input over these limits, but Temporal has already written the signal
into history by then; the client and the CLI check the same limits before sending, so
an oversized payload never reaches Temporal from vigil's own faces. Pure code: workflow
code imports it through the sandbox.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from vigil.schema import jsonlimits
from vigil.schema.jsonlimits import MAX_ARGUMENT_DEPTH
from vigil.schema.payloads import MAX_HUMAN_TEXT, ApproveInput, MessageInput, RedirectInput

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
    """Why a session's start input is refused for its size; None when it is acceptable."""
    if len(goal) > MAX_HUMAN_TEXT:
        return f"goal of {len(goal)} characters exceeds the limit of {MAX_HUMAN_TEXT}"
    if system_prompt is not None and len(system_prompt) > MAX_SYSTEM_PROMPT:
        return (
            f"system prompt of {len(system_prompt)} characters exceeds the limit of "
            f"{MAX_SYSTEM_PROMPT}"
        )
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
