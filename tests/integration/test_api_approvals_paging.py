"""The approvals inbox pages by cursor as the sessions list does (``limit``, ``cursor``,
``next_cursor``): walked page by page it gives every waiting approval exactly once, oldest
first, even when one is decided between two pages, and says when the last page is done."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_status
from tests.support.cli import poll
from tests.support.llm_stub import Reply
from vigil.activities.record.sessions import encode_cursor
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

WAITING = 5
PAGE = 2


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def page(http: httpx.Client, agent: str, cursor: str | None = None) -> dict[str, Any]:
    params: dict[str, str | int] = {"agent": agent, "limit": PAGE}
    if cursor is not None:
        params["cursor"] = cursor
    r = http.get("/v1/approvals", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert len(body["items"]) <= PAGE, body
    return body


def walk(http: httpx.Client, agent: str) -> list[list[str]]:
    """The session ids of each page, from the first to the one without a next cursor."""
    pages, cursor = [], None
    while True:
        body = page(http, agent, cursor)
        pages.append([a["session_id"] for a in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= WAITING, pages


def waiting(http: httpx.Client, agent: str, count: int) -> list[str]:
    def probe() -> list[str] | None:
        r = http.get("/v1/approvals", params={"agent": agent, "limit": 500})
        ids = [a["session_id"] for a in r.json()["items"]]
        return ids if len(ids) == count else None

    return poll(probe, 60, f"{count} approvals of {agent} wait")


def test_the_inbox_pages_by_cursor_each_approval_once(cli: CLIStack, api: ApiServer) -> None:
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    with api.client(api.token(Scope.CONTROL)) as http:
        with api.client(api.token(Scope.ADMIN)) as admin:
            agent = define(admin, "inbox-pages")
        started = []
        for n in range(WAITING):
            r = http.post(
                "/v1/sessions",
                json={"agent": agent, "goal": cli.plan(fetch, Reply.text("understood"))},
            )
            assert r.status_code == 201, r.text
            started.append(r.json()["id"])
            # One at a time, so that the order they were asked in is known.
            assert waiting(http, agent, n + 1) == started

        pages = walk(http, agent)
        assert pages == [started[0:2], started[2:4], started[4:5]], pages

        # A page's cursor holds when an approval before it is decided meanwhile: the next
        # page starts after the last one seen, not a count of rows further on.
        first = page(http, agent)
        assert [a["session_id"] for a in first["items"]] == started[0:2]
        rejected = http.post(
            f"/v1/sessions/{started[0]}/reject", json={"approval_id": "a1-0", "reason": "no"}
        )
        assert rejected.status_code == 200, rejected.text
        wait_status(http, started[0], "completed")
        second = page(http, agent, first["next_cursor"])
        assert [a["session_id"] for a in second["items"]] == started[2:4]

        # Four left fill two pages exactly: the second says it is the last.
        assert walk(http, agent) == [started[1:3], started[3:5]]


def test_paging_is_bounded_and_checked(api: ApiServer) -> None:
    with api.client(api.token(Scope.READ)) as http:
        for limit in (0, 501):
            r = http.get("/v1/approvals", params={"limit": limit})
            assert r.status_code == 422, r.text
        r = http.get("/v1/approvals", params={"cursor": "not-a-cursor"})
        assert r.status_code == 422 and "cursor" in r.json()["error"]["message"], r.text
        # Cursors forged to decode: a time that is year 10000 (or year 0) in UTC, an id
        # holding a lone surrogate. Each was a 500 from the database or its driver.
        for stamp, key in (
            ("9999-12-31T23:59:59-14:00", "1"),
            ("0001-01-01T00:00:00+14:00", "1"),
            ("2026-12-06T20:00:00+00:00", "\ud800"),
        ):
            forged = encode_cursor(datetime.fromisoformat(stamp), key)
            for path in ("/v1/sessions", "/v1/approvals", "/v1/schedules/nosuch/runs"):
                r = http.get(path, params={"cursor": forged})
                assert r.status_code == 422, (path, stamp, r.text)
                assert "cursor" in r.json()["error"]["message"], (path, r.text)
        assert http.get("/v1/approvals", params={"limit": 500}).status_code == 200
        document = http.get("/v1/openapi.json").json()
    # The same names and shape as the sessions list.
    declared = {
        path: {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}
        for path in ("/v1/sessions", "/v1/approvals")
    }
    for path, params in declared.items():
        limit = params["limit"]
        assert (limit["minimum"], limit["maximum"]) == (1, 500), (path, limit)
        assert "cursor" in params, (path, params)
    schemas = document["components"]["schemas"]
    for name in ("SessionList", "Approvals"):
        assert set(schemas[name]["properties"]) == {"items", "next_cursor"}, name


def test_a_lone_surrogate_the_record_keeps_is_served_as_its_json_escape(
    cli: CLIStack, api: ApiServer
) -> None:
    """A broken model's reply holding a lone surrogate ("\\ud83c", half an emoji) is kept
    exactly by the record; every route showing it (the inbox, the session, its transcript
    and events) answered 500, the approvals inbox of every token that saw the agent
    included, until someone decided the call. It is served as its JSON escape, which reads
    back as the same text."""
    odd = "half an emoji \ud83c"
    url = f"{cli.stub.url}/x?note={odd}"
    fetch = Reply.tool_call("http_fetch", {"url": url}, content=odd)
    with api.client(api.token(Scope.CONTROL)) as http:
        with api.client(api.token(Scope.ADMIN)) as admin:
            agent = define(admin, "surrogates")
        r = http.post("/v1/sessions", json={"agent": agent, "goal": cli.plan(fetch)})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        [waiting_id] = waiting(http, agent, 1)
        assert waiting_id == sid
        inbox = http.get("/v1/approvals", params={"agent": agent})
        assert inbox.status_code == 200, inbox.text
        assert b"\\ud83c" in inbox.content  # the escape, not bytes that are not UTF-8
        [pending] = inbox.json()["items"]
        assert pending["arguments"]["url"] == url, pending
        shown = http.get(f"/v1/sessions/{sid}")
        assert shown.status_code == 200, shown.text
        said = http.get(f"/v1/sessions/{sid}/transcript")
        assert said.status_code == 200, said.text
        assert odd in [m["content"] for m in said.json()["items"]], said.json()
        happened = http.get(f"/v1/sessions/{sid}/events")
        assert happened.status_code == 200, happened.text
        assert http.post(f"/v1/sessions/{sid}/cancel", json={}).status_code == 200
