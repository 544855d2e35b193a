"""Patterns others write are matched in linear time: an agent file's ``approve_when``
rule and a tool schema's ``pattern`` (an MCP server's, checked against the model's and a
human's arguments) of ``^(a+)+$`` against thousands of ``a`` and a ``!`` held a worker's
event loop (Python's matcher backtracks: thirty ``a`` took a minute), every session on
the worker waiting; an invalid ``pattern`` failed the model call until its retries ran
out. Each of these matches below would not end in this test's lifetime under ``re``."""

from __future__ import annotations

from vigil.activities.agents.catalog import rule_matches
from vigil.schema.agents import ArgumentRule
from vigil.schema.arguments import argument_validator, invalid_arguments
from vigil.schema.patterns import pattern_error

EVIL = "^(a+)+$"
LONG = "a" * 5000 + "!"


def test_an_approval_rule_matches_in_linear_time() -> None:
    rule = ArgumentRule(argument="content", matches=EVIL)
    assert rule_matches(rule, {"content": LONG}) is False
    assert rule_matches(rule, {"content": "aaaa"}) is True


def test_a_schemas_pattern_is_checked_in_linear_time() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": EVIL}}}
    said = invalid_arguments("t", argument_validator(schema), {"x": LONG})
    assert said is not None and "does not match" in said, said
    assert invalid_arguments("t", argument_validator(schema), {"x": "aaa"}) is None
    loose = argument_validator(schema, strict=False)
    assert invalid_arguments("t", loose, {"x": LONG}) is not None


def test_property_patterns_and_additional_properties_keep_their_meaning() -> None:
    schema = {
        "type": "object",
        "patternProperties": {EVIL: {"type": "integer"}},
        "additionalProperties": False,
    }
    validator = argument_validator(schema)
    assert invalid_arguments("t", validator, {"aaa": 1}) is None
    assert "is not of type 'integer'" in (invalid_arguments("t", validator, {"aa": "x"}) or "")
    assert invalid_arguments("t", validator, {LONG: 1}) is not None
    extra = invalid_arguments("t", validator, {"b": 1})
    assert extra is not None and "'b' does not match any of the regexes" in extra, extra
    closed = argument_validator({"type": "object", "properties": {}, "additionalProperties": False})
    said = invalid_arguments("t", closed, {"b": 1, "a": 2})
    assert said is not None and "('a', 'b' were unexpected)" in said, said


def test_a_pattern_that_cannot_be_matched_so_is_not_checked() -> None:
    for pattern in ("((", "(?=a)a", r"(a)\1"):
        schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}}
        assert invalid_arguments("t", argument_validator(schema), {"x": "zzz"}) is None
    assert pattern_error("((") is not None and pattern_error("((").startswith("not a regular")
    assert "without backtracking" in (pattern_error("(?=a)a") or "")
    assert pattern_error(EVIL) is None


def test_unevaluated_properties_beside_pattern_properties_are_not_checked() -> None:
    """jsonschema judges them with Python's matcher: left to the tool, as a pattern RE2
    cannot take is."""
    schema = {
        "type": "object",
        "patternProperties": {EVIL: {"type": "integer"}},
        "unevaluatedProperties": False,
    }
    assert invalid_arguments("t", argument_validator(schema), {LONG: 1}) is None
    alone = {"type": "object", "properties": {"a": {}}, "unevaluatedProperties": False}
    assert invalid_arguments("t", argument_validator(alone), {"b": 1}) is not None
