"""Query strings are held to the same rule as paths: one whose percent-encoding is not
UTF-8 is refused (422) before any route, and so is one holding NUL. Decoded leniently,
``?agent=%ff`` and ``?agent=%fe`` both read as U+FFFD: a filter or a recall query nobody
sent was answered as if it had been, and two different values were read as one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import ApiServer, running_api
from tests.support.api_sessions import define
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

NOT_UTF8 = ("%ff", "%fe", "%C3%28", "%ed%a0%80", "ok%ff")
"""Each decodes to bytes that are not UTF-8 (a lone byte, a broken pair, a surrogate)."""


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[ApiServer]:
    with running_api(settings) as server:
        yield server


def refused(r: httpx.Response, says: str) -> None:
    assert r.status_code == 422, (r.request.url, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] == "invalid_request", error
    assert says in error["message"], error


def queries(agent: str) -> list[tuple[str, str]]:
    """(method, URL with ``{}`` where a value goes) of routes that read text from the
    query, the others of their parameters given as a client would."""
    return [
        ("GET", "/v1/sessions?agent={}"),
        ("GET", "/v1/sessions?cursor={}"),
        ("GET", f"/v1/agents/{agent}/memory/search?q={{}}"),
        ("GET", f"/v1/agents/{agent}/memory/search?q=disk&kind={{}}"),
        ("GET", "/v1/approvals?agent={}"),
        ("GET", "/v1/webhooks/deliveries?session={}"),
        ("DELETE", f"/v1/agents/{agent}/memory/1?reason={{}}"),
    ]


def test_query_values_that_are_not_utf8_are_refused(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "qenc")
        for method, url in queries(agent):
            for value in NOT_UTF8:
                refused(http.request(method, url.format(value)), "not valid UTF-8")
        # A parameter's name is part of the query too.
        refused(http.get(f"/v1/sessions?agent%ff={agent}"), "not valid UTF-8")
        # U+FFFD sent as its UTF-8 bytes is a value like any other.
        sent = http.get("/v1/sessions", params={"agent": "\ufffd"})
        assert sent.status_code == 200, sent.text
        searched = http.get(f"/v1/agents/{agent}/memory/search?q=%ef%bf%bd")
        assert searched.status_code == 200, searched.text


def test_query_values_with_nul_are_refused(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "qnul")
        for method, url in queries(agent):
            for value in ("%00", "a%00b"):
                refused(http.request(method, url.format(value)), "NUL")
        assert http.get("/v1/sessions", params={"agent": agent}).status_code == 200


def test_a_time_off_the_calendar_in_utc_is_refused(api: ApiServer) -> None:
    # Year 1 at +14:00 is year 0 in UTC: the database's driver failed on it, a 500.
    with api.client(api.token(Scope.READ)) as http:
        for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            refused(http.get("/v1/sessions", params={"since": since}), "is out of range")
        assert http.get("/v1/sessions", params={"since": "0001-01-01T00:00:00Z"}).status_code == 200
