"""A log written to a file (a worker's `2> worker.log`) carries no colour codes, even for
a traceback; the same logging on a terminal may colour."""

from __future__ import annotations

from pathlib import Path

from tests.support.logs import logged_by

SCRIPT = """
import logging
from vigil.workers.logs import configure, get
configure("console", "INFO")
get("vigil.test").warning("something happened", session_id="s-1")
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("vigil.test").exception("it failed")
"""


def test_a_log_file_has_no_colour_codes(tmp_path: Path) -> None:
    text = logged_by(SCRIPT, tmp_path)
    assert "something happened" in text and "session_id=s-1" in text
    assert "ValueError: boom" in text  # the traceback is there, as plain text
    assert "\x1b[" not in text
