"""Lossless storage of any Python ``str`` in PostgreSQL TEXT and JSONB.

PostgreSQL refuses NUL (U+0000) in TEXT and JSONB, and UTF-8 cannot hold lone
surrogates (U+D800..U+DFFF), which Python strings may carry (e.g. from
``surrogateescape``-decoded bytes). Text that holds neither is stored exactly as it is
(flag 0), so full-text search sees it unchanged. Other text is stored escaped (flag 1):

    "\\"  -> "\\\\"       (the escape character itself)
    U+0000 -> "\\0"
    lone surrogate U+DXXX -> "\\uDXXX" (four upper-case hex digits)

In JSON values a string that needs escaping becomes ``{"$vigil.text": "<escaped>"}``,
and an object key that needs it becomes ``"$vigil.key:<escaped>"``; a user's object of
the one key ``$vigil.text`` is kept as ``{"$vigil.text": {"$vigil.raw": <object>}}``.
Pure functions: no I/O, safe to import anywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

PLAIN = 0
ESCAPED = 1
_JSON_MARK = "$vigil.text"
_KEY_MARK = "$vigil.key:"
_RAW_MARK = "$vigil.raw"
_BAD = re.compile("[\x00\ud800-\udfff]")
_ESC = re.compile(r"\\(\\|0|u[0-9A-F]{4})")


def needs_escape(text: str) -> bool:
    return _BAD.search(text) is not None


def _escape(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        ch = match.group(0)
        return "\\0" if ch == "\x00" else f"\\u{ord(ch):04X}"

    return _BAD.sub(repl, text.replace("\\", "\\\\"))


def _unescape(text: str) -> str:
    def repl(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "\\":
            return "\\"
        if token == "0":
            return "\x00"
        return chr(int(token[1:], 16))

    return _ESC.sub(repl, text)


def encode(text: str) -> tuple[str, int]:
    """(stored text, flag) for a TEXT column with a companion flag column."""
    if needs_escape(text):
        return _escape(text), ESCAPED
    return text, PLAIN


def plain(text: str) -> str:
    """Text for a TEXT column without a flag, shown as it is and never decoded (a
    session's goal and summary, an event's actor and reason, whose exact words the
    transcript keeps): NUL as U+2400 (the picture of NUL), a lone surrogate as U+FFFD,
    everything else (backslashes too) unchanged."""
    if not needs_escape(text):
        return text
    return _BAD.sub(lambda m: "\u2400" if m.group(0) == "\x00" else "\ufffd", text)


def decode(stored: str, flag: int) -> str:
    return _unescape(stored) if flag == ESCAPED else stored


def encode_json(value: Any) -> Any:
    """A JSON value safe for JSONB; ``decode_json`` gives back an equal value, except for
    a float that is NaN or infinite (a tool's result, a model's numbers): no JSON number,
    so PostgreSQL refuses it, and it is kept as null, as JSON serializers write it."""
    if isinstance(value, str):
        return {_JSON_MARK: _escape(value)} if needs_escape(value) else value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            skey = str(key)
            if needs_escape(skey) or skey.startswith(_KEY_MARK):
                skey = _KEY_MARK + _escape(skey)
            out[skey] = encode_json(item)
        if len(out) == 1 and _JSON_MARK in out:
            # A user object that looks like our mark, whatever it holds, is wrapped once
            # more (before, one holding an object was not, and read back as another).
            return {_JSON_MARK: {_RAW_MARK: out}}
        return out
    if isinstance(value, list | tuple):
        return [encode_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decode_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _JSON_MARK in value:
            inner = value[_JSON_MARK]
            if isinstance(inner, str):
                return _unescape(inner)
            if (
                isinstance(inner, dict)
                and len(inner) == 1
                and isinstance(inner.get(_RAW_MARK), dict)
            ):
                raw = inner[_RAW_MARK]
                return {_decode_key(k): decode_json(v) for k, v in raw.items()}
            # Anything else under the mark is a user's object stored as it was (rows
            # written before such objects were wrapped): read as it is, never an error.
            # (One stored so whose value was {"$vigil.raw": {...}} still reads unwrapped.)
        return {_decode_key(k): decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_json(item) for item in value]
    return value


def _decode_key(key: str) -> str:
    return _unescape(key[len(_KEY_MARK) :]) if key.startswith(_KEY_MARK) else key
