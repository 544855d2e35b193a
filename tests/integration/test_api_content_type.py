"""A JSON route's body sent as a form (`curl -d` without a JSON Content-Type) is refused
with 415 and what to send, not with a 422 saying the body is not an object; a JSON body
that is wrong stays a 422 with details."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import ApiServer, running_api
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def test_a_form_body_is_told_to_be_json(api: ApiServer) -> None:
    token = api.token(Scope.CONTROL)
    body = '{"agent": "ops", "goal": "g"}'
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}) as h:
        form = h.post(
            "/v1/sessions",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        untyped = h.post("/v1/sessions", content=body)
        wrong = h.post("/v1/sessions", json={"agent": "ops"})
    assert form.status_code == 415, form.text
    assert form.json()["error"] == {
        "code": "unsupported_media_type",
        "message": "the body must be JSON, sent with Content-Type: application/json (it came "
        "as application/x-www-form-urlencoded)",
    }
    assert untyped.status_code == 415, untyped.text
    assert untyped.json()["error"]["message"].endswith("(it came as no type)")
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["error"]["details"][0]["loc"] == ["body", "goal"]
