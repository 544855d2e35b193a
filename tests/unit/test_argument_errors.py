"""A tool call's argument error says what is wrong first, whatever the value's size.

The validator's own message begins with the offending value, quoted: the error sent back
to the model was cut at 300 characters, so a 32,000-character note came back as
``invalid arguments for remember at content: 'qqqq...`` and never said "too long" nor
the limit, and the model could not correct itself.
"""

from __future__ import annotations

from vigil.activities.agents import catalog
from vigil.activities.tools import registry
from vigil.schema.agents import AgentRuntime, ToolDescriptor
from vigil.workflows.agents import edited_arguments_error


def test_a_built_in_tools_too_long_argument_says_so_and_gives_the_limit() -> None:
    said = registry.validate("remember", {"content": "q" * 32_000})
    assert said is not None
    assert said.startswith("invalid arguments for remember at content: 'qqq"), said
    assert said.endswith("is too long (at most 8000)"), said
    assert len(said) < 300


def test_a_catalog_tools_short_argument_says_so_and_gives_the_limit() -> None:
    tool = ToolDescriptor(
        name="note",
        description="",
        kind="python",
        parameters={
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 3, "maxLength": 10}},
        },
    )
    assert catalog.argument_error(tool, {"text": "x"}) == (
        "invalid arguments for note at text: 'x' is too short (at least 3)"
    )
    long_one = catalog.argument_error(tool, {"text": "y" * 5000})
    assert long_one is not None and long_one.endswith("is too long (at most 10)"), long_one


def test_an_unknown_tools_error_lists_only_what_the_session_may_call() -> None:
    """With ``--allow-tools ''`` the model is offered finish alone; its call of a tool it
    made up was answered with the agent's whole catalogue, each of which it would then be
    refused."""
    from vigil.activities.agents.catalog import call_error
    from vigil.activities.tools.registry import validate
    from vigil.schema.tools import BUILTIN_TOOLS

    said = validate("made_up", {}, allowed=[])
    assert said == "unknown tool 'made_up'; available: finish"
    said = validate("made_up", {}, allowed=["recall"])
    assert said == "unknown tool 'made_up'; available: finish, recall"
    assert validate("made_up", {}) == (
        f"unknown tool 'made_up'; available: {', '.join(sorted(BUILTIN_TOOLS))}"
    )
    catalog = {name: object() for name in ("notes.shout", "finish", "recall")}
    said = call_error(catalog, "notes__shout", {}, allowed=["recall"])  # type: ignore[arg-type]
    assert said == "unknown tool 'notes__shout'; available: finish, recall"


def test_every_error_is_named_up_to_three() -> None:
    """A call (or a person's edit) wrong in several places was told of the first only,
    fixed it, and was refused again for the next."""
    tool = ToolDescriptor(
        name="send",
        description="",
        kind="python",
        parameters={
            "type": "object",
            "properties": {
                "to": {"type": "string"},
                "cc": {"type": "array", "items": {"type": "string"}},
                "n": {"type": "integer", "minimum": 1},
                "body": {"type": "string"},
            },
            "required": ["to", "body"],
        },
    )
    said = catalog.argument_error(tool, {"to": 5, "cc": ["a", 7], "n": 0})
    assert said is not None
    assert said == (
        "invalid arguments for send at (root): 'body' is a required property; "
        "at cc/1: 7 is not of type 'string'; at n: 0 is less than the minimum of 1 (1 more)"
    )
    runtime = AgentRuntime(agent_id="a", version=1, tools=[tool])
    edited = edited_arguments_error(runtime, "send", {"to": "x", "body": 3, "n": "two"})
    assert edited is not None and "at body:" in edited and "at n:" in edited, edited
