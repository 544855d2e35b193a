"""Paths whose percent-encoding is not UTF-8 are refused: decoded leniently, ``%ff``,
``%fe`` and ``%ef%bf%bd`` would all become U+FFFD, so two customers' conversation keys
would share one session and an artifact would be stored under a name nobody sent. Every
path parameter (keys, session ids, artifact names, agent ids) is a 422 with the API's
error shape, and nothing is started or stored."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_status
from tests.support.llm_stub import Reply
from vigil.workers.keyed import keyed_session_id
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def refused_as_not_utf8(r: httpx.Response) -> None:
    assert r.status_code == 422, (r.request.url, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert "not valid UTF-8" in error["message"], error


def test_keys_that_are_not_utf8_are_refused_and_start_nothing(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "enc")
        for key in ("%ff", "%fe", "cust%C3%28omer", "%ed%a0%80"):
            r = http.post(f"/v1/agents/{agent}/keys/{key}/messages", json={"text": "hi"})
            refused_as_not_utf8(r)
        assert http.get("/v1/sessions", params={"agent": agent}).json()["items"] == []
        replaced = keyed_session_id(agent, "\ufffd")  # where a lenient decoding sent them
        assert http.get(f"/v1/sessions/{replaced}").status_code == 404

        # A real U+FFFD, sent as its UTF-8 bytes, is a key like any other.
        goal = cli.plan(Reply.text("served"))
        sent = http.post(
            f"/v1/agents/{agent}/keys/%ef%bf%bd/messages", json={"text": "hi", "goal": goal}
        )
        assert sent.status_code == 200, sent.text
        assert sent.json()["session_id"] == replaced


def test_ids_and_names_that_are_not_utf8_are_refused(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "enc")
        started = http.post(
            "/v1/sessions", json={"agent": agent, "goal": cli.plan(Reply.text("ok"))}
        )
        assert started.status_code == 201, started.text
        sid = started.json()["id"]
        wait_status(http, sid, "completed")

        refused_as_not_utf8(http.put(f"/v1/sessions/{sid}/artifacts/report%ff.txt", content=b"x"))
        refused_as_not_utf8(http.get(f"/v1/sessions/{sid}/artifacts/report%ff.txt"))
        assert http.get(f"/v1/sessions/{sid}/artifacts").json()["items"] == []
        refused_as_not_utf8(http.get(f"/v1/sessions/{sid}%ff"))
        refused_as_not_utf8(http.post(f"/v1/sessions/{sid}%ff/cancel"))
        refused_as_not_utf8(http.get(f"/v1/agents/{agent}%ff"))
        refused_as_not_utf8(http.get(f"/v1/agents/{agent}%ff/memory/search", params={"q": "x"}))
        with http.stream("GET", f"/v1/agents/{agent}%ff/stream") as stream:
            assert stream.status_code == 422
        assert http.get(f"/v1/sessions/{sid}").status_code == 200


def test_an_agent_stream_for_an_id_with_nul_is_422_not_an_endless_stream(
    api: ApiServer,
) -> None:
    with (
        api.client(api.token(Scope.READ)) as http,
        http.stream("GET", "/v1/agents/%00/stream") as stream,
    ):
        assert stream.status_code == 422
        stream.read()
        assert stream.json()["error"]["code"] == "invalid_request"


def test_a_line_break_in_a_key_is_refused_as_other_control_characters(
    api: ApiServer,
) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "lines")
        # A line feed was "Not Found" (the route's pattern did not match across it) where a
        # carriage return or a tab was told what is wrong.
        answers = {
            ch: http.post(f"/v1/agents/{agent}/keys/k{ch}/messages", json={"text": "hi"})
            # DEL and the C1 controls were taken (U+0085 a line break to some readers).
            for ch in ("%0A", "%0D", "%09", "a%0Ab", "%7F", "%C2%85", "a%C2%9Bb")
        }
        for ch, r in answers.items():
            assert r.status_code == 422, (ch, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
            assert "control characters" in r.json()["error"]["message"], (ch, r.text)


def test_an_agent_id_holding_nul_is_refused_on_every_memory_route(api: ApiServer) -> None:
    """Search, add and forget refused it; the history of a subject was a 500 (and the
    server's log line held the raw NUL)."""
    with api.client(api.token(Scope.ADMIN)) as http:
        answers = {
            "history": http.get("/v1/agents/a%00b/memory/history", params={"subject": "x"}),
            "search": http.get("/v1/agents/a%00b/memory/search", params={"q": "x"}),
            "add": http.post("/v1/agents/a%00b/memory", json={"content": "x"}),
        }
    for route, r in answers.items():
        assert r.status_code == 422, (route, r.text)
        assert r.json()["error"]["code"] == "invalid_request", (route, r.text)
