"""Regular expressions written by others (an agent file's ``approve_when`` rule, a tool
schema's ``pattern``) matched in linear time: RE2, not Python's backtracking ``re``, whose
``^(a+)+$`` against thirty ``a`` and a ``!`` held a worker's whole event loop for a minute,
every session on it waiting. RE2 has no backreferences and no lookaround; a pattern that
needs them is refused where vigil takes it (``pattern_error``), or, in a schema vigil did
not write, not checked (its server checks its own arguments). Pure: no I/O, so workflow
code may import it.
"""

from __future__ import annotations

import functools
import re

import re2  # type: ignore[import-untyped]

MAX_PATTERN = 2000
"""The longest pattern taken (characters)."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is said by the caller, not on stderr


class PatternError(ValueError):
    """A pattern RE2 cannot take (or one too long)."""


_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")
r"""``\uXXXX`` (JSON Schema's and Python's escape of a character; RE2 writes ``\x{XXXX}``),
not itself escaped."""

_OPEN_REPEAT = re.compile(r"(?<!\\)\{,\d+\}")
"""``{,n}``: Python's "at most n", RE2's text."""

_UNICODE_CLASSES = re.compile(r"(?<!\\)(?:\\\\)*\\[dDwWsSbB]")
r"""``\d``, ``\w``, ``\s``, ``\b`` and their negations, not themselves escaped: Python
reads them over Unicode, RE2 over ASCII."""

_SURROGATE = re.compile("[\ud800-\udfff]")


@functools.lru_cache(maxsize=512)
def compiled(pattern: str) -> re2._Regexp:
    """``pattern`` compiled by RE2; PatternError when it cannot be."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"a pattern holds at most {MAX_PATTERN} characters")
    try:
        return re2.compile(_UNICODE_ESCAPE.sub(r"\1\\x{\2}", pattern), _OPTIONS)
    except re2.error as exc:
        raise PatternError(_said(exc)) from None


def _said(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be matched here (not a regular expression, or one that needs
    backtracking: a backreference, lookahead or lookbehind); None when it can."""
    try:
        re.compile(pattern)  # not a regular expression at all: Python's words for it
    except re.error as exc:
        return f"not a regular expression: {exc}"
    except RecursionError:
        return "not a regular expression: nested too deeply"
    try:
        compiled(pattern)
    except PatternError as exc:
        return f"{exc} (vigil matches patterns in linear time, with RE2's syntax)"
    if _OPEN_REPEAT.search(pattern):
        return "write {0,n} for 'at most n' ({,n} reads as its own text here)"
    return None


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` (one ``pattern_error`` passed) matches somewhere in ``text`` (a
    lone surrogate in it, which RE2's UTF-8 cannot hold, read as U+FFFD)."""
    if not text.isascii():
        text = _SURROGATE.sub("\ufffd", text)
    return compiled(pattern).search(text) is not None


def matches_as_written(pattern: str, text: str) -> bool:
    r"""Whether ``pattern`` matches ``text``, or may have where RE2 reads it otherwise than
    Python's ``re`` did when it was written: a pattern RE2 cannot take (stored before
    they were refused); ``$`` before a last line feed; ``\d``, ``\w``, ``\s`` or ``\b``
    over text that is not ASCII; ``{,n}``. For an approval rule, which errs towards
    asking."""
    try:
        if search(pattern, text):
            return True
        if text.endswith("\n") and search(pattern, text[:-1]):
            return True
    except PatternError:
        return True
    unicode_classes = not text.isascii() and _UNICODE_CLASSES.search(pattern) is not None
    return unicode_classes or "{," in pattern
