"""A request body's numbers and booleans are taken only as JSON numbers and booleans: a
budget of ``true`` seconds, an importance of ``"0.5"`` or a schedule ``paused: "yes"`` is
a 422 naming the field (before: a 1-second budget, a stored memory, a paused schedule).
An integer stays a float field's value. A schedule's note, one line of text, refuses NUL
as every other one-line text does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_status
from tests.support.llm_stub import Reply
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


@pytest.fixture(scope="module")
def agent(api: ApiServer) -> str:
    with api.client(api.token(Scope.ADMIN)) as http:
        return define(http, "strict")


def refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request", r.text
    assert error["message"].startswith(f"{field}: "), r.text


def test_a_budget_of_a_bool_or_a_string_is_refused(
    cli: CLIStack, api: ApiServer, agent: str
) -> None:
    with api.client(api.token(Scope.CONTROL)) as http:
        for field in ("max_seconds", "max_cost_usd"):
            for value in (True, False, "5", "0.5"):
                r = http.post(
                    "/v1/sessions", json={"agent": agent, "goal": "g", "budget": {field: value}}
                )
                refused(r, f"budget.{field}")
                keyed = http.post(
                    f"/v1/agents/{agent}/keys/k-strict/messages",
                    json={"text": "t", "budget": {field: value}},
                )
                refused(keyed, f"budget.{field}")
        for value in (True, "30"):
            keyed = http.post(
                f"/v1/agents/{agent}/keys/k-strict/messages",
                json={"text": "t", "conversation_idle_seconds": value},
            )
            refused(keyed, "conversation_idle_seconds")
        # Integers are numbers: a float field takes them.
        goal = cli.plan(Reply.text("within budget"))
        r = http.post(
            "/v1/sessions",
            json={
                "agent": agent,
                "goal": goal,
                "budget": {"max_seconds": 300, "max_cost_usd": 2, "max_steps": 3},
            },
        )
        assert r.status_code == 201, r.text
        wait_status(http, r.json()["id"], "completed")


def test_a_memory_importance_of_a_bool_or_a_string_is_refused(api: ApiServer) -> None:
    agent = f"mem-strict-{uuid.uuid4().hex[:8]}"
    with api.client(api.token(Scope.ADMIN, agents=[agent])) as http:
        path = f"/v1/agents/{agent}/memory"
        for value in (True, False, "0.5", "1"):
            r = http.post(path, json={"content": f"fact {value!r}", "importance": value})
            refused(r, "importance")
        listed = http.get(f"{path}/search", params={"q": "fact"})
        assert listed.status_code == 200 and listed.json()["items"] == [], listed.text
        whole = http.post(path, json={"content": "an integer importance", "importance": 1})
        assert whole.status_code == 201, whole.text


def _schedule(http: httpx.Client, agent: str, **body: Any) -> httpx.Response:
    base = {"agent": agent, "goal": "check", "every": "1h"}
    return http.post("/v1/schedules", json={**base, **body})


def test_a_schedule_paused_that_is_no_bool_and_a_note_with_nul_are_refused(
    api: ApiServer, agent: str
) -> None:
    ids: list[str] = []

    def schedule(http: httpx.Client, **body: Any) -> httpx.Response:
        ids.append(f"strict-{uuid.uuid4().hex[:8]}")
        return _schedule(http, agent, id=ids[-1], **body)

    with api.client(api.token(Scope.ADMIN)) as http:
        try:
            for value in ("yes", "true", 1, 0, "false"):
                refused(schedule(http, paused=value), "paused")
                assert http.get(f"/v1/schedules/{ids[-1]}").status_code == 404
            refused(schedule(http, paused=True, note="a\u0000b"), "note")
            assert http.get(f"/v1/schedules/{ids[-1]}").status_code == 404
            made = schedule(http, paused=True, note="a note\twith a tab")
            assert made.status_code == 201, made.text
            assert made.json()["paused"] is True
            assert made.json()["note"] == "a note\twith a tab"
        finally:  # (a schedule made where it should have been refused too)
            for sid in ids:
                http.delete(f"/v1/schedules/{sid}")


def test_every_write_that_takes_no_body_refuses_one(api: ApiServer) -> None:
    """A body sent to a route that takes none was dropped unread: a schedule's pause,
    resume or trigger with `{"reason": ...}` (or not JSON at all) answered 200 and did
    the action; a session's resume too. Every such route of the API's own document."""
    bodiless = [
        (method.upper(), path)
        for path, ops in api.app.openapi()["paths"].items()  # type: ignore[union-attr]
        for method, op in ops.items()
        if method in ("post", "put", "patch", "delete") and "requestBody" not in op
    ]
    assert ("POST", "/v1/schedules/{schedule_id}/trigger") in bodiless, bodiless
    with api.client(api.token(Scope.ADMIN)) as http:
        for method, path in bodiless:
            url = path.replace("{session_id}", "no-such-session").replace(
                "{schedule_id}", "no-such-schedule"
            )
            for body in (b'{"reason": "x"}', b"not json", b"[1, 2]"):
                r = http.request(
                    method, url, content=body, headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 422, (method, path, body, r.text)
                assert "takes no body" in r.json()["error"]["message"], (path, r.text)
            # And none sent is still the action (here: an id nobody has), as is an empty
            # JSON object, which says nothing either (the README's resume sends one).
            assert http.request(method, url).status_code == 404, (method, path)
            assert http.request(method, url, json={}).status_code == 404, (method, path)
