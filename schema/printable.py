"""Text shown to a person, made harmless: the one rule for every character a terminal (or a
Markdown reader) could act on instead of showing.

Recorded text comes from untrusted sources (a goal or message sent through the API, a
reason, a tool's output, a model's reply). Shown as it is, an ESC starts an escape
sequence (a window title, colours, a cleared screen), a C1 control may act as one, and a
bidi override reorders what follows it. ``visible`` replaces each such character with one
visible character, so lengths, widths and styled spans stay where they were:

    C0 controls U+0000..U+001F -> their Unicode pictures U+2400..U+241F (NUL -> ␀, ESC -> ␛)
    DEL U+007F                 -> ␡ (U+2421)
    C1 controls U+0080..U+009F, bidi embeddings and overrides U+202A..U+202E, bidi
    isolates U+2066..U+2069, lone surrogates U+D800..U+DFFF -> U+FFFD (�)

except the characters of ``keep`` (newline and tab by default: multi-line content stays
multi-line). ``visible_json`` keeps a JSON document exact instead: the same characters,
inside its strings, become ``\\uXXXX`` escapes. Pure functions: no I/O, safe to import
anywhere.
"""

from __future__ import annotations

import functools
import re

REPLACEMENT = "\ufffd"
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_HARMFUL: dict[int, str] = {
    **{code: chr(0x2400 + code) for code in range(0x20)},
    0x7F: "\u2421",
    **{code: REPLACEMENT for code in range(0x80, 0xA0)},
    **{code: REPLACEMENT for code in _BIDI},
    **{code: REPLACEMENT for code in range(0xD800, 0xE000)},
}
# As _HARMFUL, but for the whitespace between a JSON document's tokens (inside its
# strings, JSON writes every control character as an escape).
_IN_JSON = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


@functools.cache
def _table(keep: str) -> dict[int, str]:
    return {code: shown for code, shown in _HARMFUL.items() if chr(code) not in keep}


def visible(text: str, keep: str = "\n\t") -> str:
    """``text`` with every character a terminal could act on (but those in ``keep``)
    replaced by one visible, harmless character. Where newlines are kept, so is the
    carriage return of a CRLF line end (text from Windows, an HTTP body): only a CR on its
    own, which could overwrite the line shown, is replaced."""
    table = _table(keep)
    if "\n" not in keep or "\r\n" not in text:
        return text.translate(table)
    return "\r\n".join(part.translate(table) for part in text.split("\r\n"))


def visible_json(document: str) -> str:
    """A JSON document with the same value, each character ``visible`` would replace
    written as a ``\\uXXXX`` escape (such characters can only stand inside its strings;
    newline, tab and carriage return outside them are its layout, and stay)."""
    return _IN_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", document)
