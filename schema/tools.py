"""What each built-in tool is: name, JSON-Schema arguments, effects, who runs it.

Pure data, shared by the workflow (policy: which calls need approval) and the
activities (validation and execution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MEMORY_KINDS = ("fact", "reflection", "lesson")
"""The kinds of memory an agent keeps (the `remember` tool's, the client's and the API's)."""

Effects = Literal["none", "internal", "external"]


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    parameters: dict[str, Any]
    effects: Effects = "internal"
    """external: reaches outside vigil (network, other systems) and needs approval by default."""
    risky: bool = False
    handled_by: Literal["activity", "workflow"] = "activity"
    extra: dict[str, Any] = field(default_factory=dict)


def _obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


BUILTIN_TOOLS: dict[str, ToolInfo] = {
    t.name: t
    for t in [
        ToolInfo(
            "http_fetch",
            "Fetch a URL over HTTP(S) (GET). Hosts must be on the allowlist.",
            _obj({"url": {"type": "string", "minLength": 1, "maxLength": 2048}}, ["url"]),
            effects="external",
        ),
        ToolInfo(
            "write_artifact",
            "Store a named text artifact for this session.",
            _obj(
                {
                    "name": {"type": "string", "minLength": 1, "maxLength": 255},
                    "content": {"type": "string"},
                    "mime_type": {"type": "string", "maxLength": 200},
                },
                ["name", "content"],
            ),
        ),
        ToolInfo(
            "read_artifact",
            "Read a named artifact of this session, from a character offset; a long one is "
            "read in parts, each saying where the next begins.",
            _obj(
                {
                    "name": {"type": "string", "minLength": 1, "maxLength": 255},
                    "max_chars": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                    "offset": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                },
                ["name"],
            ),
            effects="none",
        ),
        ToolInfo(
            "remember",
            "Store a fact, reflection or lesson in long-term memory.",
            _obj(
                {
                    "content": {"type": "string", "minLength": 1, "maxLength": 8000},
                    "kind": {"enum": list(MEMORY_KINDS)},
                    "subject": {"type": "string", "maxLength": 500},
                    "importance": {"type": "number", "minimum": 0, "maximum": 1},
                },
                ["content"],
            ),
        ),
        ToolInfo(
            "recall",
            "Search long-term memory.",
            _obj(
                {
                    "query": {"type": "string", "minLength": 1, "maxLength": 2000},
                    "k": {"type": "integer", "minimum": 1, "maximum": 50},
                },
                ["query"],
            ),
            effects="none",
        ),
        ToolInfo(
            "wait_until",
            "Sleep on a durable timer (seconds from now, or an ISO-8601 UTC time); "
            "a human can wake the session early.",
            {
                "type": "object",
                "properties": {
                    "seconds": {"type": "number", "minimum": 0, "maximum": 366 * 24 * 3600},
                    "until": {"type": "string", "format": "date-time"},
                    "reason": {"type": "string", "maxLength": 1000},
                },
                "additionalProperties": False,
                "anyOf": [{"required": ["seconds"]}, {"required": ["until"]}],
            },
            effects="none",
            handled_by="workflow",
        ),
        ToolInfo(
            "ask_human",
            "Ask the human operator a question and wait for their reply.",
            _obj({"question": {"type": "string", "minLength": 1, "maxLength": 8000}}, ["question"]),
            effects="none",
            handled_by="workflow",
        ),
        ToolInfo(
            "finish",
            "Finish the session with a final summary. Set succeeded to false when the goal "
            "was not reached: the session then ends failed.",
            _obj(
                {
                    "summary": {"type": "string", "maxLength": 16000},
                    "succeeded": {"type": "boolean"},
                },
                ["summary"],
            ),
            effects="none",
            handled_by="workflow",
        ),
    ]
}


def needs_approval(name: str, require_approval: list[str] | None) -> bool:
    """The policy: explicit list when given, else any tool with external effects or risky."""
    if require_approval is not None:
        return name in require_approval
    info = BUILTIN_TOOLS.get(name)
    return info is not None and (info.effects == "external" or info.risky)
