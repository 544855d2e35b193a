"""JSON of any shape, handled without recursion: what a model sends is never trusted.

Python's JSON parser and encoder recurse once per level of nesting, so a value a few
hundred levels deep (a model's tool arguments, a provider's reply) raises RecursionError
wherever it is parsed, encoded, validated or copied. These helpers find the depth and
encode without recursion, so callers can refuse such values with a clear message before
anything else touches them. Pure functions: no I/O, safe to import anywhere.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MAX_ARGUMENT_DEPTH = 64
"""Tool arguments nested deeper than this go back to the model as a tool error."""


_SHALLOW = 100
"""Values at most this deep are left to ``json.dumps`` (faster, and deep enough for any
caller's stack)."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_LONG_TEXT = re.compile(r"\d{19}")
_LONG_BYTES = re.compile(rb"\d{19}")


class TooDeep(ValueError):
    """A JSON text or value nested deeper than allowed (or than the parser can go)."""


def depth(value: Any, limit: int | None = None) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0, ``[]`` is 1); the
    walk stops as soon as it passes ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if limit is not None and deepest > limit:
            return deepest
        stack.extend((child, level) for child in children)
    return deepest


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (keys included, however deeply nested) holds a lone
    surrogate (U+D800..U+DFFF): Python's JSON parser takes ``"\\ud800"``, but such text
    cannot be encoded as UTF-8 to be sent or stored."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


class NotJsonNumber(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a text read with ``finite``: Python's
    parser takes them, but they are no JSON (PostgreSQL's JSON refuses them, and so does
    every other parser a value is sent on to)."""


def _refuse_constant(name: str) -> Any:
    raise NotJsonNumber(f"{name} is not a JSON number")


def loads(text: str | bytes, limit: int | None = None, *, finite: bool = False) -> Any:
    """``json.loads``, raising ``TooDeep`` (a ValueError) instead of RecursionError, and
    for a value nested deeper than ``limit``; with ``finite``, :class:`NotJsonNumber` for
    ``NaN`` and the infinities.

    Parsed by orjson (a provider's streamed reply is parsed event by event on every step,
    several times faster), and by ``json.loads`` whatever orjson refuses that Python's
    parser takes (``NaN``, escaped lone surrogates, more than 1,024 levels) or reads
    otherwise (an integer past 64 bits, which orjson makes a float; any run of 19 digits
    sends the text to ``json.loads``): the value and the errors are ``json.loads``'s
    either way."""
    value = _parse(text, finite)
    if limit is not None and depth(value, limit) > limit:
        raise TooDeep(f"JSON nested deeper than {limit} levels")
    return value


def _parse(text: str | bytes, finite: bool = False) -> Any:
    long = _LONG_BYTES.search(text) if isinstance(text, bytes) else _LONG_TEXT.search(text)
    if long is None:
        try:
            return orjson.loads(text)  # refuses NaN and the infinities itself
        except orjson.JSONDecodeError:
            pass  # Python's parser may still take it, or refuses it with its own error
    try:
        value = json.loads(text, parse_constant=_refuse_constant if finite else None)
    except RecursionError:
        raise TooDeep("JSON nested too deeply") from None
    # orjson refuses a number past a float's range (1e999); Python's parser reads it as an
    # infinity without a word.
    if finite and (constant := non_finite(value)) is not None:
        raise NotJsonNumber(f"a number out of a float's range (it reads as {constant})")
    return value


def non_finite(value: Any) -> str | None:
    """``NaN``, ``Infinity`` or ``-Infinity`` as JSON would spell the first such float in
    ``value`` (however deeply nested); None when it has none."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


def dumps(value: Any) -> str:
    """JSON text of any JSON value, exactly as ``json.dumps`` writes it, however deeply
    nested."""
    if depth(value, _SHALLOW) <= _SHALLOW:
        return json.dumps(value)
    out: list[str] = []
    # Each entry is a value to write, or a literal piece of text (a str in a 1-tuple).
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple) and len(item) == 1 and isinstance(item[0], str):
            out.append(item[0])
        elif isinstance(item, dict):
            pieces: list[Any] = [("{",)]
            for index, (key, child) in enumerate(item.items()):
                if index:
                    pieces.append((", ",))
                pieces.append((json.dumps(str(key)) + ": ",))
                pieces.append(child)
            pieces.append(("}",))
            stack.extend(reversed(pieces))
        elif isinstance(item, list):
            pieces = [("[",)]
            for index, child in enumerate(item):
                if index:
                    pieces.append((", ",))
                pieces.append(child)
            pieces.append(("]",))
            stack.extend(reversed(pieces))
        else:
            out.append(json.dumps(item))
    return "".join(out)
