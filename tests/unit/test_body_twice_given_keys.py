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


async def test_a_body_is_checked_only_when_its_route_asks() -> None:
    # The checks parse the whole body (a 4 MiB body of twin keys took 1.7 s of the
    # API's one event loop): they ran for every request, before its token was checked,
    # on paths no route has too; now the route's check of the caller runs them.
    from starlette.datastructures import State

    from vigil.workers.api.limits import JsonBodies, held_refusal

    seen: dict[str, object] = {}

    async def route(scope: dict[str, object], receive: object, send: object) -> None:
        seen.update(scope["state"])  # type: ignore[call-overload]

    app = JsonBodies(route)  # type: ignore[arg-type]
    body = b'{"goal": "a", "goal": "b"}'

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope: dict[str, object] = {"type": "http", "path": "/v1/nowhere", "state": {}}
    await app(scope, receive, None)  # type: ignore[arg-type]
    assert "vigil_held_body_refusal" not in seen  # nothing parsed, nothing decided
    state = State(scope["state"])  # type: ignore[arg-type]
    assert held_refusal(state) == (
        422,
        "invalid_request",
        "the body gives the key 'goal' twice (each key once in an object)",
    )
