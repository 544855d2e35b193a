"""A provider request's body holds the JSON ``json.dumps`` writes, whoever writes it
(a float's text may differ: ``1e-7`` for ``1e-07``)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from vigil.activities.models.http import encode_json


def _reference(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "m", "messages": [{"role": "user", "content": 'héllo \u2028 \x00 😀 "q"'}]},
        {"temperature": 0.7, "max_tokens": 10, "stream": True, "stop": None, "n": 10**15},
        {"generationConfig": {"temperature": 1e-7, "topP": 1.0}, "contents": []},
        {"tools": [{"type": "function", "function": {"parameters": {"minimum": -0.0}}}]},
        {"big": 10**30, "text": "past 64 bits: written by the standard library"},
        {1: "a key that is no string"},
    ],
)
def test_the_body_is_what_json_dumps_writes(payload: Any) -> None:
    body = encode_json(payload)
    assert json.loads(body) == json.loads(_reference(payload))
    assert json.dumps(json.loads(body)) == json.dumps(json.loads(_reference(payload)))


@pytest.mark.parametrize(
    "payload",
    [
        {"temperature": math.nan},
        {"generationConfig": {"temperature": math.inf}},
    ],
)
def test_a_setting_that_is_not_a_finite_number_is_refused(payload: Any) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        encode_json(payload)


def test_a_lone_surrogate_fails_as_it_always_did() -> None:
    payload = {"messages": [{"content": "a\ud800b"}]}
    with pytest.raises(UnicodeEncodeError):
        _reference(payload)
    with pytest.raises(UnicodeEncodeError):
        encode_json(payload)
