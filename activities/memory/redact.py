"""Redaction of secrets and personal data before text is stored as memory.

Each finding is replaced by ``[redacted:<kind>]`` and counted per kind. The patterns aim
at few false positives: ordinary numbers, dates, times, version strings, UUIDs and
hex digests (sha256 artifact ids, git commits) pass untouched unless they follow a word
that marks them as a secret (``token=...``, ``Authorization: Bearer ...``). Pure
functions, no I/O.

Kinds: ``private_key``, ``bearer``, ``jwt``, ``api_key``, ``secret``, ``email``,
``card``, ``phone``, ``token``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MARK = "[redacted:{kind}]"


@dataclass(frozen=True)
class Redaction:
    """The redacted text and how many findings of each kind were replaced."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _mark(kind: str) -> str:
    return MARK.format(kind=kind)


_MARKED = re.compile(re.escape(MARK).replace(re.escape("{kind}"), "[a-z_]+"), re.IGNORECASE)


def marked(text: str) -> bool:
    """Whether ``text`` holds a redaction's mark (made by a redaction, or typed as one)."""
    return _MARKED.search(text) is not None


_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
    r"(?: BLOCK)?-----",
    re.DOTALL,
)
# "Authorization: Bearer x", "Proxy-Authorization: Basic x", or a bare "Bearer <long token>".
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)\s+)"
    r"([^\s\"',;]+)"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]{16,})")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# Vendor keys with a recognisable prefix.
_API_KEYS = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"sk-(?:proj-|ant-(?:api\d\d-)?|live_|test_)?[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|npm_[A-Za-z0-9]{36}"
    r")(?![A-Za-z0-9])"
)
# "password: hunter22", "api_key = '...'", "AWS_SECRET_ACCESS_KEY=..." (the value goes).
_ASSIGNMENT = re.compile(
    r"(?i)(\b(?:[a-z0-9]+[_-])*(?:password|passwd|passphrase|pwd|secret|api[_-]?key|apikey"
    r"|access[_-]?key|private[_-]?key|token|auth[_-]?token|access[_-]?token|refresh[_-]?token"
    r"|client[_-]?secret|secret[_-]?key)\b[\"']?\s*(?:[:=]|=>)\s*)([\"']?)([^\s\"',;]{6,})"
)
_NOT_A_VALUE = {"true", "false", "null", "none", "required", "optional", "string", "******"}
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
)
# 13-19 digits in groups of 4 (or one run), checked with Luhn before redacting.
_CARD = re.compile(r"(?<![\d.-])(?:\d{4}[ -]?){3}\d{1,7}(?![\d-])")
# Phone numbers need a shape: a + country code, or parentheses / separators in the North
# American 3-3-4 grouping. A run of digits alone is an id, not a phone.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[ .-]\d{3}[ .-]\d{4}"
    r")(?![\w-]|\.\d)"
)
# A long run of token characters that mixes cases and digits and looks random.
_OPAQUE = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{32,}(?![A-Za-z0-9+/_=-])")
_LOWER_RUN = re.compile(r"[a-z]{4,}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_random(token: str) -> bool:
    core = token.rstrip("=")
    if len(core) < 32 or "[redacted:" in token:
        return False
    # Hex digests are single-case: they are ids (sha256, git), not credentials.
    if not (any(c.isupper() for c in core) and any(c.islower() for c in core)):
        return False
    # Identifiers and paths are made of words: long lower-case runs. Keys look like noise.
    in_words = sum(len(run) for run in _LOWER_RUN.findall(core))
    return in_words <= 0.4 * len(core) and _entropy(core) >= 4.0


def redact(text: str) -> Redaction:
    """Replace secrets and personal data in ``text``; see the module docstring."""
    counts: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], kind: str, repl: Callable[[re.Match[str]], str]) -> None:
        nonlocal text

        def wrapped(match: re.Match[str]) -> str:
            out = repl(match)
            if out != match.group(0):
                counts[kind] += 1
            return out

        text = pattern.sub(wrapped, text)

    sub(_PRIVATE_KEY, "private_key", lambda m: _mark("private_key"))
    sub(_AUTH_HEADER, "bearer", lambda m: m.group(1) + _mark("bearer"))
    sub(_JWT, "jwt", lambda m: _mark("jwt"))
    sub(_BEARER, "bearer", lambda m: m.group(1) + _mark("bearer"))
    sub(_API_KEYS, "api_key", lambda m: _mark("api_key"))

    def assignment(m: re.Match[str]) -> str:
        value = m.group(3)
        if value.lower() in _NOT_A_VALUE or value.startswith("[redacted:"):
            return m.group(0)
        return m.group(1) + m.group(2) + _mark("secret")

    sub(_ASSIGNMENT, "secret", assignment)
    sub(_EMAIL, "email", lambda m: _mark("email"))

    def card(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return _mark("card")
        return m.group(0)

    sub(_CARD, "card", card)

    def phone(m: re.Match[str]) -> str:
        digits = sum(c.isdigit() for c in m.group(0))
        return _mark("phone") if 7 <= digits <= 15 else m.group(0)

    sub(_PHONE, "phone", phone)
    sub(_OPAQUE, "token", lambda m: _mark("token") if _looks_random(m.group(0)) else m.group(0))
    return Redaction(text=text, counts=dict(counts))
