"""How a tool call's arguments are checked against the tool's JSON schema: one validator
for the model's calls (activities) and a human's edited arguments (the workflow).

JSON Schema counts any number without a fractional part as an integer, ``1e30`` too; a
Python tool's arguments are then parsed into Python types, where such a number is no
integer the tool can take, so a call that passed the check failed in the tool. Here an
integer is a whole number that a float holds exactly (at most 2**53 in magnitude), or
one written without a fraction or exponent. Pure: no I/O, so workflow code may import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.protocols import Validator

from vigil.schema import patterns

MAX_EXACT = 2**53
"""The largest magnitude of a whole number a float holds exactly."""


def _whole(_checker: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT


def _matches(pattern: str, text: str) -> bool:
    """Whether a schema's ``pattern`` matches ``text``, in linear time (schema.patterns);
    a pattern that needs backtracking is not checked (the tool checks its own input)."""
    try:
        return patterns.search(pattern, text)
    except patterns.PatternError:
        return True


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _matches(str(pattern), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, given: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in given.items():
        for key, value in instance.items():
            if _matches(str(pattern), key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, given: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterned = [str(p) for p in schema.get("patternProperties", {})]
    extras = sorted(
        (k for k in instance if k not in named and not any(_matches(p, k) for p in patterned)),
        key=str,
    )
    if validator.is_type(given, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], given, path=extra)
    elif not given and extras:
        if patterned:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in extras)
            shown = ", ".join(repr(each) for each in sorted(patterned))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {shown}")
        else:
            listed = ", ".join(repr(each) for each in extras)
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({listed} {verb} unexpected)"
            )


_LINEAR = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}

LooseValidator = validators.extend(Draft202012Validator, validators=_LINEAR)  # type: ignore[no-untyped-call]
"""Draft 2020-12 with JSON Schema's own integers, its patterns matched in linear time."""

ArgumentValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators=_LINEAR,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _whole),
)
"""Draft 2020-12, with integers as above, and its patterns matched in linear time (a
tool's schema is another's text: an MCP server's, an agent file's)."""


_StockValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _whole),
)
"""The strict integers with jsonschema's own pattern keywords (Python's ``re``): how
edited arguments were checked before ``PATCH_LINEAR_PATTERNS``, for the histories of then."""


def argument_validator(
    parameters: dict[str, Any], *, strict: bool = True, linear: bool = True
) -> Validator:
    """A validator of ``parameters`` (a tool's schema). ``strict`` False: JSON Schema's own
    integers (how edited arguments were checked before, for the histories of then).
    ``linear`` False: patterns matched by Python's ``re`` (a session's history from before
    ``PATCH_LINEAR_PATTERNS`` replays with it)."""
    if not linear:
        stock: type[Validator] = _StockValidator if strict else Draft202012Validator
        return stock(parameters, format_checker=FormatChecker())
    kind: type[Validator] = ArgumentValidator if strict else LooseValidator
    return kind(_linear_schema(parameters), format_checker=FormatChecker())


_NAMED = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
)
"""Keywords whose value maps names (not keywords) to schemas."""

_DATA = frozenset({"const", "enum", "default", "examples"})
"""Keywords whose value is data, not schema."""


def _linear_schema(schema: Any) -> Any:
    """``schema`` as the linear validators must see it: without ``$schema`` anywhere (a
    part naming another draft was checked by that draft's own validator, with Python's
    ``re``; so was all of it under a ``$ref`` back to a root that names one), and without
    ``unevaluatedProperties`` when it holds ``patternProperties`` (jsonschema matches those
    with ``re`` where it judges that keyword: it is not checked)."""
    drop = {"$schema"}
    if _holds(schema, "patternProperties") and _holds(schema, "unevaluatedProperties"):
        drop.add("unevaluatedProperties")
    return _without(schema, frozenset(drop))


def _subschemas(schema: Any) -> Iterator[Any]:
    """The schemas directly within ``schema``."""
    if isinstance(schema, list):
        yield from schema
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key in _DATA:
            continue
        if key in _NAMED and isinstance(value, dict):
            yield from value.values()
        elif isinstance(value, (dict, list)):
            yield value


def _holds(schema: Any, keyword: str) -> bool:
    """Whether ``keyword`` is a keyword of ``schema`` or of a schema within it."""
    if isinstance(schema, dict) and keyword in schema:
        return True
    return any(_holds(sub, keyword) for sub in _subschemas(schema))


def _without(schema: Any, drop: frozenset[str]) -> Any:
    """``schema`` with the keywords ``drop`` taken out of it and every schema within it
    (a property of that name, and data, stay)."""
    if isinstance(schema, list):
        return [_without(sub, drop) for sub in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in drop:
            continue
        if key in _DATA:
            out[key] = value
        elif key in _NAMED and isinstance(value, dict):
            out[key] = {name: _without(sub, drop) for name, sub in value.items()}
        elif isinstance(value, (dict, list)):
            out[key] = _without(value, drop)
        else:
            out[key] = value
    return out


def invalid_arguments(name: str, validator: Validator, arguments: dict[str, Any]) -> str | None:
    """The model's error for ``arguments`` that do not fit tool ``name``'s schema (built-in
    and catalog tools alike); None when they fit."""
    errors = fit_errors(validator, arguments)
    return None if errors is None else f"invalid arguments for {name} {errors}"


NAMED_ERRORS = 3
"""The most errors of one call's arguments named (the rest counted): one told at a time
was fixed, then refused again for the next."""


def fit_errors(validator: Validator, arguments: dict[str, Any]) -> str | None:
    """``at WHERE: WHAT`` for each of the first ``NAMED_ERRORS`` errors of ``arguments``
    (by where they are), ``; `` between, then ``(N more)``; None when they fit."""
    errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return None
    named = "; ".join(f"at {_where(e)}: {error_text(e)}" for e in errors[:NAMED_ERRORS])
    left = len(errors) - NAMED_ERRORS
    return f"{named} ({left} more)" if left > 0 else named


def _where(error: Any) -> str:
    return ("/".join(str(p) for p in error.path) or "(root)")[:200]


_LIMITS = {
    "maxLength": "at most",
    "maxItems": "at most",
    "maxProperties": "at most",
    "minLength": "at least",
    "minItems": "at least",
    "minProperties": "at least",
}


def error_text(error: Any) -> str:
    """A validation error in at most 300 characters that says what is wrong: the
    validator's message quotes the offending value first (a note of megabytes), so a long
    value is shortened in it, and a length's limit is added."""
    text = str(error.message)
    shown = repr(error.instance)
    if len(shown) > 60 and shown in text:
        text = text.replace(shown, shown[:40] + "..." + shown[-8:], 1)
    bound = _LIMITS.get(str(error.validator))
    if bound is not None:
        text += f" ({bound} {error.validator_value})"
    return text if len(text) <= 300 else text[:299] + "\u2026"
