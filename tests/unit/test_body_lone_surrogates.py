"""Which request bodies the API refuses as JSON holding a lone surrogate (422), checked
once for every route: a surrogate escape without its pair, anywhere in the value."""

from __future__ import annotations

import pytest

from vigil.workers.api.limits import _holds_lone_surrogate


@pytest.mark.parametrize(
    "body",
    [
        rb'{"a": "\ud800"}',
        rb'{"a": ["ok", {"b": "x\uDFFF"}]}',
        rb'{"\udc80": 1}',
        rb'"\ud83d"',
    ],
)
def test_a_lone_surrogate_anywhere_is_found(body: bytes) -> None:
    assert _holds_lone_surrogate(body)


@pytest.mark.parametrize(
    "body",
    [
        rb'{"a": "\ud83d\ude00"}',  # a pair is one character
        rb'{"a": "\\ud800"}',  # an escaped backslash, then text
        b'{"a": "plain"}',
        rb"name: x \ud800",  # not JSON: its route says what is wrong
        b"[" * 5000 + rb'"\ud800"' + b"]" * 5000,  # too deep: its route refuses it
        b"",
    ],
)
def test_other_bodies_pass(body: bytes) -> None:
    assert not _holds_lone_surrogate(body)
