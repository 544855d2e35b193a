"""A JSON body that gives a key twice is refused (422 naming the key), on every route,
however deep the key: Python's parser keeps the last value, so ``{"goal": "a", "goal":
"b"}`` started a session with goal "b", and an agent's JSON definition with two ``name``
keys was applied as the second, where the caller (or a reviewer reading the body) may have
meant the first. Agent files refuse a key given twice already."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def test_a_key_given_twice_is_refused_and_nothing_is_done(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "dupkeys")
        sid = f"dup-{uuid.uuid4().hex[:8]}"
        bodies = [
            (f'{{"agent": "{agent}", "id": "{sid}", "goal": "first", "goal": "second"}}', "goal"),
            (
                f'{{"agent": "{agent}", "id": "{sid}", "goal": "g", '
                '"budget": {"max_steps": 1, "max_steps": 9}}',
                "budget.max_steps",
            ),
        ]
        for body, key in bodies:
            r = http.post("/v1/sessions", content=body.encode(), headers=JSON)
            assert r.status_code == 422, (body, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_request", error
            assert f"'{key}'" in error["message"] and "twice" in error["message"], error
            # Written as the app's other errors are (compact JSON).
            assert r.content.startswith(b'{"error":{"code":"invalid_request","message":')
        assert http.get(f"/v1/sessions/{sid}").status_code == 404  # nothing started
        name = f"dupspec-{uuid.uuid4().hex[:8]}"
        spec = f'{{"spec": {{"name": "{name}", "name": "{name}-other"}}}}'
        r = http.post("/v1/agents", content=spec.encode(), headers=JSON)
        assert r.status_code == 422, r.text
        assert "'spec.name'" in r.json()["error"]["message"], r.text
        assert http.get(f"/v1/agents/{name}-other").status_code == 404
        # The same keys in different objects, and a key equal to a value, are fine.
        ok = (
            f'{{"agent": "{agent}", "goal": "goal", "budget": {{"max_steps": 1}}, '
            '"policy_note": null}'
        )
        r = http.post("/v1/sessions", content=ok.encode(), headers=JSON)
        assert r.status_code == 422 and "policy_note" in r.text  # an unknown field, not a twin
