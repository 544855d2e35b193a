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
    assert "with RE2" in (pattern_error("(?=a)a") or "")
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


def test_a_part_naming_another_draft_is_still_matched_in_linear_time() -> None:
    """jsonschema checks a part with its own ``$schema`` (or all of a schema under a
    ``$ref`` back to a root naming one) with that draft's validator, and Python's ``re``."""
    nested = {
        "type": "object",
        "properties": {
            "x": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": EVIL},
        },
    }
    assert invalid_arguments("t", argument_validator(nested), {"x": LONG}) is not None
    looped = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": {"x": {"pattern": EVIL}, "child": {"$ref": "#"}},
    }
    assert invalid_arguments("t", argument_validator(looped), {"child": {"x": LONG}}) is not None


def test_keywords_are_taken_out_of_schemas_only() -> None:
    """A property named as the keyword, and data that holds it, stay."""
    schema = {
        "type": "object",
        "properties": {
            "unevaluatedProperties": {"type": "integer"},
            "c": {"const": {"unevaluatedProperties": 1}},
        },
        "patternProperties": {"^x": {}},
        "unevaluatedProperties": False,
    }
    validator = argument_validator(schema)
    assert invalid_arguments("t", validator, {"unevaluatedProperties": 1}) is None
    said = invalid_arguments("t", validator, {"c": {}})
    assert said is not None and "was expected" in said, said


def test_lone_surrogates_and_escapes_are_read() -> None:
    """A model's argument may hold a lone surrogate, which RE2's UTF-8 cannot: the check
    raised instead of answering; a schema's ``\\uXXXX`` is RE2's ``\\x{XXXX}``."""
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "^a"}}}
    assert invalid_arguments("t", argument_validator(schema), {"x": "a\ud800"}) is None
    assert rule_matches(ArgumentRule(argument="c", matches="rm"), {"c": "rm \ud800"}) is True
    printable = {"type": "object", "properties": {"x": {"pattern": "^[\\u0020-\\u007e]*$"}}}
    assert invalid_arguments("t", argument_validator(printable), {"x": "tab\there"}) is not None


def test_an_approval_rule_asks_where_re2_may_read_it_otherwise() -> None:
    """Python's ``$`` also matches before a last line feed, and its ``\\w``, ``\\d``,
    ``\\s`` and ``\\b`` read Unicode: a rule ``^rm .*$`` no longer asked for
    ``"rm -rf /tmp/x\\n"`` (a shell runs it all the same)."""
    assert rule_matches(ArgumentRule(argument="c", matches="^rm .*$"), {"c": "rm -rf /x\n"})
    assert rule_matches(ArgumentRule(argument="c", matches=r"^\w+$"), {"c": "café"})
    assert not rule_matches(ArgumentRule(argument="c", matches=r"^\d+$"), {"c": "abc"})
    assert pattern_error("x{,3}") is not None  # "at most 3" in Python, its own text in RE2


def test_edited_arguments_of_histories_from_before_are_checked_as_then() -> None:
    """Replayed, a history from before PATCH_LINEAR_PATTERNS checks with Python's re:
    ``^\\d+$`` took ``"42\\n"`` then (RE2 does not)."""
    schema = {"type": "object", "properties": {"n": {"type": "string", "pattern": r"^\d+$"}}}
    assert invalid_arguments("t", argument_validator(schema, linear=False), {"n": "42\n"}) is None
    assert invalid_arguments("t", argument_validator(schema), {"n": "42\n"}) is not None
