"""Which request bodies the API refuses as JSON giving a key twice (422), checked once for
every route, and the path it names."""

from __future__ import annotations

import pytest

from vigil.workers.api.limits import twice_given_key


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"goal": "a", "goal": "b"}', "goal"),
        (b'  {"budget": {"max_steps": 1, "max_steps": 9}}', "budget.max_steps"),
        (b'{"x": {"y": [{"b": 1}, {"c": 1, "c": 1}]}, "z": {"q": 1, "q": 2}}', "x.y[1].c"),
        (b'[1, {"a": {"b": 2, "b": 2}}]', "[1].a.b"),
        (b'{"a": {"a": 1, "a": 2}, "a": 3}', "a"),  # the outer object first
        (b'{"\\u0061": 1, "a": 2}', "a"),  # the same key, escaped
        # With a UTF-8 BOM; in UTF-16 or UTF-32 (which the routes refuse before).
        ('\ufeff{"goal": "a", "goal": "b"}'.encode(), "goal"),
        ('{"goal": "a", "goal": "b"}'.encode("utf-16"), "goal"),
        ('{"goal": "a", "goal": "b"}'.encode("utf-32-le"), "goal"),
    ],
)
def test_a_key_given_twice_is_named(body: bytes, path: str) -> None:
    assert twice_given_key(body) == path


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": {"k": 1}, "b": {"k": 1}}',  # one key in each of two objects
        b'{"a": "a", "b": ["a", "a"]}',  # values may repeat
        b'{"A": 1, "a": 2}',  # keys are case-sensitive
        b"name: x\nname: y\n",  # not JSON: its route says what is wrong
        b'{"a": 1, "a": ',  # malformed: its route says so
        b"[" * 5000 + b"]" * 5000,  # too deep: its route refuses it
        b"",
        b'"text"',
    ],
)
def test_other_bodies_pass(body: bytes) -> None:
    assert twice_given_key(body) is None
