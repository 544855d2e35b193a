"""A traceback in the worker's log names where it failed and never prints the values of
the failing code's variables: a worker's frames hold task tokens, session inputs, a
model connection's resolved key. In JSON the traceback is text under ``exception``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.logs import logged_by

SCRIPT = """
import logging
from vigil.workers.logs import configure
configure({fmt!r}, "INFO")

def call_the_provider():
    api_key = "sk-never-in-a-log-0123"
    raise ValueError("the provider refused")

try:
    call_the_provider()
except ValueError:
    logging.getLogger("vigil.test").exception("the model call failed")
"""


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_traceback_has_no_local_values(tmp_path: Path, fmt: str) -> None:
    text = logged_by(SCRIPT.format(fmt=fmt), tmp_path)
    assert "sk-never-in-a-log" not in text
    if fmt == "json":
        (line,) = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
        assert line["event"] == "the model call failed"
        text = line["exception"]
    assert "call_the_provider" in text  # where it failed
    assert "ValueError: the provider refused" in text
