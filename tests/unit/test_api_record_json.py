"""How the API writes its JSON: a lone surrogate as its escape, a float that is not finite
as null (as the serializer it replaced wrote it), everything else as JSON always was."""

from __future__ import annotations

import json

from vigil.workers.api.app import RecordJSON


def test_a_lone_surrogate_is_written_as_its_escape_and_reads_back_the_same() -> None:
    content = {"content": "half an emoji \ud83c", "nested": [{"k": "\udc80 and ü"}]}
    raw = RecordJSON(content).body
    raw.decode("utf-8")  # valid UTF-8 throughout
    assert b"\\ud83c" in raw and "ü".encode() in raw
    assert json.loads(raw) == content


def test_a_float_that_is_not_finite_is_null() -> None:
    raw = RecordJSON({"cost": float("nan"), "scores": [1.5, float("inf"), -float("inf")]}).body
    assert json.loads(raw) == {"cost": None, "scores": [1.5, None, None]}
