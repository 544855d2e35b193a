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
        text_json = h.post("/v1/sessions", content=body, headers={"Content-Type": "text/json"})
        wrong = h.post("/v1/sessions", json={"agent": "ops"})
    assert form.status_code == 415, form.text
    assert form.json()["error"] == {
        "code": "unsupported_media_type",
        "message": "the body must be JSON, sent with Content-Type: application/json (it came "
        "as application/x-www-form-urlencoded)",
    }
    assert untyped.status_code == 415, untyped.text
    assert untyped.json()["error"]["message"].endswith("(it came as no type)")
    # A JSON type FastAPI does not read as JSON was a 422 saying fields were missing.
    assert text_json.status_code == 415, text_json.text
    assert text_json.json()["error"]["message"].endswith("(it came as text/json)")
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["error"]["details"][0]["loc"] == ["body", "goal"]


def test_a_body_that_is_not_utf8_is_said_to_be_so(api: ApiServer) -> None:
    """Bad JSON was told "the body is not valid JSON (UTF-8)" while bytes that are not
    UTF-8 got "There was an error parsing the body"; both now say what is wrong."""
    token = api.token(Scope.CONTROL)
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}) as h:
        latin = h.post(
            "/v1/sessions",
            content='{"agent": "ops", "goal": "caf\u00e9"}'.encode("latin-1"),
            headers={"Content-Type": "application/json"},
        )
    assert latin.status_code == 400, latin.text
    assert latin.json()["error"] == {
        "code": "malformed_request",
        "message": "the body is not UTF-8, as JSON must be",
    }
    # JSON in UTF-16 or UTF-32 was read (Python's parser takes them), and a lone
    # surrogate in it passed the check every route makes (it looks for UTF-8 escapes):
    # a signed keyed trigger's body so sent was a 500.
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}) as h:
        for encoding in ("utf-16", "utf-16-be", "utf-32"):
            wide = h.post(
                "/v1/sessions",
                content='{"agent": "ops", "goal": "\\ud800"}'.encode(encoding),
                headers={"Content-Type": "application/json"},
            )
            assert wide.status_code == 400, (encoding, wide.text)
            assert wide.json()["error"]["message"] == "the body is not UTF-8, as JSON must be"


def test_each_way_a_body_is_unreadable_is_named(api: ApiServer) -> None:
    """JSON nested a thousand levels deep was told "the body is not valid JSON (UTF-8)",
    as bytes that are not UTF-8 and broken JSON were: each is now named, broken JSON with
    where it breaks."""
    token = api.token(Scope.CONTROL)
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {token}"}) as h:

        def said(body: bytes) -> str:
            r = h.post("/v1/sessions", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_request"
            message: str = r.json()["error"]["message"]
            return message

        deep = said(b'{"goal": ' + b"[" * 5000 + b"]" * 5000 + b"}")
        assert deep == "the body's JSON nests too deeply to be read", deep
        broken = said(b'{"agent": "ops", "goal": }')
        assert broken == "the body is not valid JSON: Expecting value at character 25", broken
        assert said("caf\u00e9".encode("latin-1")) == "the body is not UTF-8, as JSON must be"
        # ASCII all through: a number longer than Python's int parser takes was told the
        # body was not UTF-8.
        long = said(b'{"agent": "ops", "goal": "g", "budget": {"max_steps": ' + b"1" * 5000 + b"}}")
        assert long == "a number in the body has more than 4300 digits", long


def test_a_method_no_route_serves_names_every_method_the_path_serves(api: ApiServer) -> None:
    """OPTIONS /v1/sessions was a 405 saying `Allow: POST`: the path serves GET too."""
    with httpx.Client(base_url=api.base_url) as h:
        r = h.request("OPTIONS", "/v1/sessions")
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == "GET, POST", r.headers
        assert r.json()["error"]["code"] == "method_not_allowed"
        assert "GET, POST" in r.json()["error"]["message"]
        one = h.request("PATCH", "/v1/me")
        assert one.status_code == 405 and one.headers["allow"] == "GET", one.headers
