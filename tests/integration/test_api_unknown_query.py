"""A query parameter a route does not take is refused (422), never ignored: a misspelt
``?limt=5`` or ``?afterseq=3`` answered as if it were absent gives a caller the first page
(or every row) when it asked for something else, and nothing says why. The refusal names
the unknown parameters and lists the ones the route takes. Signed trigger deliveries are
the exception: the systems that send them may add query strings of their own."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import ApiServer, running_api
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

BOGUS = "definitely_not_a_parameter"


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def refused(r: httpx.Response, *names: str) -> str:
    assert r.status_code == 422, (r.request.method, r.request.url, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] == "invalid_request", error
    for name in names:
        assert repr(name) in error["message"], error
    assert [d["loc"] for d in error["details"]] == [["query", n] for n in names], error
    message: str = error["message"]
    return message


def test_misspelt_parameters_are_refused_and_named(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        message = refused(http.get("/v1/sessions", params={"limt": 5}), "limt")
        for takes in ("agent", "status", "since", "schedule", "limit", "cursor"):
            assert takes in message, message
        message = refused(http.get("/v1/sessions/nope/transcript?afterseq=3"), "afterseq")
        assert "after_seq" in message and "limit" in message, message
        # Every unknown one is named, once each, in the order sent.
        refused(http.get("/v1/sessions?limt=5&limit=2&curser=x&limt=6"), "limt", "curser")
        # A route that takes none says so.
        assert "no query parameters" in refused(http.get("/v1/me?verbose=1"), "verbose")
        # Names are case-sensitive, as the routes read them.
        refused(http.get("/v1/sessions?Limit=2"), "Limit")
        # The parameters a route declares still work.
        assert http.get("/v1/sessions", params={"limit": 1}).status_code == 200
        assert http.get("/v1/me").status_code == 200


def test_a_parameter_given_twice_is_refused(api: ApiServer) -> None:
    """Was answered with the last value (``?limit=1&limit=500`` a page of 500), where the
    caller may have meant the first: each parameter takes one value."""
    with api.client(api.token(Scope.ADMIN)) as http:
        r = http.get("/v1/sessions?limit=1&limit=2")
        message = refused(r, "limit")
        assert "given 2 times" in message and "one value" in message, message
        refused(http.get("/v1/sessions/nope/events?after=1&kind=a&after=2&kind=b"), "after", "kind")
        # An unknown one and a repeated one are both named, unknown first.
        refused(http.get("/v1/sessions?limt=1&limit=1&limit=2"), "limt", "limit")
        # What clients add on their own may repeat.
        assert http.get("/v1/me?_=1&_=2").status_code == 200
        assert http.get("/v1/sessions?limit=2").status_code == 200


def test_every_route_refuses_what_it_does_not_take(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        document = http.get("/v1/openapi.json").json()
        routes = [
            (method.upper(), re.sub(r"\{[^}]+\}", "x", path), operation)
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if not path.endswith("/stream")  # answered by the next test, as they never end
            and path != "/v1/triggers/{name}"  # the exception, below
        ]
        assert len(routes) > 30, routes
        for method, path, operation in routes:
            r = http.request(method, path, params={BOGUS: "1"})
            if method == "HEAD":  # the same refusal, its body left out as HEAD's is
                assert (r.status_code, r.content) == (422, b""), (path, r.status_code)
                continue
            message = refused(r, BOGUS)
            for param in operation.get("parameters", []):
                if param["in"] == "query":
                    assert repr(param["name"]) in message, (path, message)
        # What clients add on their own passes everywhere: a cache-buster, the last event
        # id an EventSource polyfill sends on reconnecting.
        for added in ("_", "lastEventId"):
            assert http.get("/v1/me", params={added: "1"}).status_code == 200, added
        # A scraper may ask its metrics with parameters of its own.
        assert http.get("/metrics", params={BOGUS: "1"}).status_code == 200


def test_streams_refuse_before_they_open(api: ApiServer) -> None:
    # A token of another agent, so that a stream let through would end at once (403).
    with api.client(api.token(Scope.READ, agents=["someone-else"])) as http:
        refused(http.get("/v1/sessions/nope/stream?last_event_id=3"), "last_event_id")
        message = refused(http.get("/v1/agents/nope/stream?token=1"), "token")
        assert "'tokens'" in message, message


def test_signed_trigger_deliveries_take_any_query(api: ApiServer) -> None:
    with api.client() as http:
        plain = http.post("/v1/triggers/nope", json={})
        extra = http.post("/v1/triggers/nope?source=github&x=1", json={})
        assert plain.status_code == extra.status_code == 401, (plain.text, extra.text)
        assert extra.json()["error"]["code"] == "bad_signature", extra.text


def test_who_may_ask_is_settled_before_what_was_asked(api: ApiServer) -> None:
    """A caller without a token was answered 422 with the route's parameters before it
    was asked who it is: a refusal of the caller comes first (401, then 403), and only a
    caller the route admits hears which parameters it takes."""
    with api.client() as http:
        r = http.get("/v1/sessions", params={"limt": 5})
        assert r.status_code == 401, r.text
        assert "limit" not in r.text, r.text
    with api.client("vgl_not_a_token") as http:
        assert http.get("/v1/sessions", params={"limt": 5}).status_code == 401
    with api.client(api.token(Scope.READ)) as http:
        r = http.post("/v1/sessions", params={BOGUS: "1"}, json={"goal": "x"})
        assert r.status_code == 403, r.text  # a start needs a control token
        refused(http.get("/v1/sessions", params={"limt": 5}), "limt")
    with api.client(api.token(Scope.CONTROL)) as http:
        refused(http.post("/v1/sessions", params={BOGUS: "1"}, json={"goal": "x"}), BOGUS)
