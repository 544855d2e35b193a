"""A log line in a file holds no raw control character: a request path or a model's text
with NUL made the API's log a binary file to grep, and a carriage return or an escape
sequence can hide or rewrite what a terminal shows of the line. They are written as
escapes; line breaks of a traceback stay."""

from __future__ import annotations

from pathlib import Path

from tests.support.logs import logged_by

SCRIPT = """
import logging
from vigil.workers.logs import configure, get

configure("console", "INFO")
get("vigil.test").warning("path a\\x00b, then\\rhidden \\x1b[2Kgone \\x7f end", agent="x\\x00y")
try:
    raise ValueError("boom\\x00")
except ValueError:
    logging.getLogger("vigil.test").exception("failed")
"""


def test_control_characters_in_a_log_line_are_escaped(tmp_path: Path) -> None:
    text = logged_by(SCRIPT, tmp_path)
    assert "path a\\x00b, then\\rhidden \\x1b[2Kgone \\x7f end" in text, text
    assert "x\\x00y" in text, text
    assert "boom\\x00" in text, text
    assert "Traceback (most recent call last):\n" in text  # a traceback keeps its lines
    raw = {ch for ch in text if (ord(ch) < 32 and ch not in "\n\t") or ord(ch) == 127}
    assert raw == set(), raw
