"""Acting on sessions over HTTP: the approvals inbox lists every pending call across
sessions with its exact arguments; approve (with edited arguments), reject, pause,
message, redirect and resume answer with the state after the action, refusals are 409
with the session's reason, and the record names the token's owner as the actor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_pending, wait_status
from tests.support.cli import read_record
from tests.support.llm_stub import Reply
from vigil.schema import event_kinds
from vigil.schema.payloads import MAX_HUMAN_TEXT
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def start(http: httpx.Client, agent: str, goal: str) -> str:
    r = http.post("/v1/sessions", json={"agent": agent, "goal": goal})
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def events_of(cli: CLIStack, sid: str, kind: str) -> list[Any]:
    return [e for e in read_record(cli.database_url, sid)[2] if e.kind == kind]


def test_inbox_approve_with_edits_and_reject(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        first, second = define(admin, "inbox"), define(admin, "inbox")
    # Longer than any preview: the inbox must give the arguments exactly.
    asked = {"url": f"{cli.stub.url}/x?q={'long-' * 100}"}
    fetch = Reply.tool_call("http_fetch", asked)
    with api.client(api.token(Scope.CONTROL, owner="ana")) as ana:
        sid_a = start(ana, first, cli.plan(fetch, Reply.text("fetched")))
        pending_a = wait_pending(ana, sid_a)
        sid_b = start(ana, second, cli.plan(fetch, Reply.text("understood")))
        wait_pending(ana, sid_b)

        items = [
            a for a in ana.get("/v1/approvals").json()["items"] if a["agent_id"] in (first, second)
        ]
        assert [a["session_id"] for a in items] == [sid_a, sid_b], "oldest first"
        assert pending_a["tool"] == "http_fetch" and pending_a["approval_id"] == "a1-0"
        assert pending_a["arguments"] == asked
        assert json.loads(pending_a["arguments_json"]) == asked
        assert pending_a["digest"]
        only_a = ana.get("/v1/approvals", params={"agent": first}).json()["items"]
        assert [a["session_id"] for a in only_a] == [sid_a]

        with api.client(api.token(Scope.READ, agents=[second])) as scoped:
            seen = scoped.get("/v1/approvals").json()["items"]
            assert {a["session_id"] for a in seen} == {sid_b}
            assert scoped.get("/v1/approvals", params={"agent": first}).status_code == 403
            assert (
                scoped.post(
                    f"/v1/sessions/{sid_b}/approve", json={"approval_id": "a1-0"}
                ).status_code
                == 403
            ), "a read token approved"

        unknown = ana.post(f"/v1/sessions/{sid_a}/approve", json={"approval_id": "a9-9"})
        assert unknown.status_code == 409, unknown.text
        assert unknown.json()["error"]["code"] == "refused"
        assert "unknown approval id 'a9-9'" in unknown.json()["error"]["message"]
        wrong = ana.post(
            f"/v1/sessions/{sid_a}/approve",
            json={"approval_id": "a1-0", "digest": "0" * 64},
        )
        assert wrong.status_code == 409 and "digest" in wrong.json()["error"]["message"]

        edited = {"url": f"{cli.stub.url}/edited"}
        done = ana.post(
            f"/v1/sessions/{sid_a}/approve",
            json={
                "approval_id": "a1-0",
                "note": "fine",
                "edited_arguments": edited,
                "digest": pending_a["digest"],
            },
        )
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["accepted"] is True and body["message"] == "approved a1-0"
        assert body["state"] is None or body["state"]["pending_approvals"] == []
        wait_status(ana, sid_a, "completed")
        [decided] = events_of(cli, sid_a, "approval_decided")
        assert decided.actor == "ana" and decided.reason == "fine"
        assert decided.payload["decision"] == "approve"
        assert decided.payload["edited_arguments"] == edited

    with api.client(api.token(Scope.CONTROL, owner="bob")) as bob:
        rejected = bob.post(
            f"/v1/sessions/{sid_b}/reject", json={"approval_id": "a1-0", "reason": "not now"}
        )
        assert rejected.status_code == 200 and rejected.json()["message"] == "rejected a1-0"
        wait_status(bob, sid_b, "completed")
        [decided] = events_of(cli, sid_b, "approval_decided")
        assert (decided.actor, decided.reason, decided.payload["decision"]) == (
            "bob",
            "not now",
            "reject",
        )
        left = {a["session_id"] for a in bob.get("/v1/approvals").json()["items"]}
        assert not left & {sid_a, sid_b}
        ended = bob.post(f"/v1/sessions/{sid_b}/pause", json={"reason": "late"})
        assert ended.status_code == 409, ended.text


def test_pause_message_redirect_resume(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "steer")
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    # The last reply takes a moment: the second resume below lands while the session runs
    # (not paused, not ended yet), whatever the machine's speed.
    goal = cli.plan(fetch, Reply.hang(2.0, then=Reply.text("all steered")))
    said = "hello\x00world, ünïcode"
    with api.client(api.token(Scope.CONTROL, owner="cara")) as http:
        sid = start(http, agent, goal)
        wait_pending(http, sid)

        paused = http.post(f"/v1/sessions/{sid}/pause", json={"reason": "lunch"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["message"] == "paused" and paused.json()["state"]["paused"] is True
        again = http.post(f"/v1/sessions/{sid}/pause")
        assert again.status_code == 409 and "already paused" in again.json()["error"]["message"]

        msg = http.post(f"/v1/sessions/{sid}/message", json={"text": said})
        assert msg.status_code == 200 and msg.json()["accepted"] is True, msg.text
        at_limit = "y" * MAX_HUMAN_TEXT  # the session's own limit, exactly
        assert http.post(f"/v1/sessions/{sid}/message", json={"text": at_limit}).is_success
        new_goal = "count the files instead"
        moved = http.post(f"/v1/sessions/{sid}/redirect", json={"goal": new_goal})
        assert moved.status_code == 200 and moved.json()["state"]["goal"] == new_goal

        too_big = http.post(
            f"/v1/sessions/{sid}/message", json={"text": "x" * (MAX_HUMAN_TEXT + 1)}
        )
        assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "invalid_request"
        assert http.post(f"/v1/sessions/{sid}/message", json={"text": ""}).status_code == 422
        # One-line text is refused with NUL (the message above keeps it): it was taken and
        # the session's goal recorded with `\0` in its place.
        # A cancel's reason too (taken: the record's cancel event showed U+2400 for it).
        for path, body in (
            ("redirect", {"goal": "a\x00b"}),
            ("pause", {"reason": "a\x00b"}),
            ("cancel", {"reason": "a\x00b"}),
        ):
            nul = http.post(f"/v1/sessions/{sid}/{path}", json=body)
            assert nul.status_code == 422, nul.text
            assert "must not contain NUL" in nul.json()["error"]["message"], nul.text
        typo = http.post(f"/v1/sessions/{sid}/pause", json={"reasn": "lunch"})
        assert typo.status_code == 422 and "reasn" in typo.json()["error"]["message"], typo.text
        broken = http.post(
            f"/v1/sessions/{sid}/message",
            content=b'{"text": "unterminated',
            headers={"Content-Type": "application/json"},
        )
        assert broken.status_code == 400
        asleep = http.post(f"/v1/sessions/{sid}/wake")
        assert asleep.status_code == 409 and "not sleeping" in asleep.json()["error"]["message"]

        assert http.post(f"/v1/sessions/{sid}/approve", json={"approval_id": "a1-0"}).is_success
        wait_status(http, sid, "paused")
        resumed = http.post(f"/v1/sessions/{sid}/resume")
        assert resumed.status_code == 200 and resumed.json()["state"]["paused"] is False
        not_paused = http.post(f"/v1/sessions/{sid}/resume")
        assert not_paused.status_code == 409
        assert "not paused" in not_paused.json()["error"]["message"]
        wait_status(http, sid, "completed")

        users = [
            m["content"]
            for m in http.get(f"/v1/sessions/{sid}/transcript").json()["items"]
            if m["role"] == "user"
        ]
        assert users == [goal, said, at_limit, f"New goal from cara: {new_goal}"]

    _, transcript, events = read_record(cli.database_url, sid)
    assert said in [m.content for m in transcript]
    by_kind = {e.kind: e for e in events}
    for kind in (
        event_kinds.SESSION_PAUSED,
        event_kinds.SESSION_RESUMED,
        event_kinds.SESSION_REDIRECTED,
        event_kinds.HUMAN_MESSAGE,
        event_kinds.APPROVAL_DECIDED,
    ):
        assert by_kind[kind].actor == "cara", kind
    assert by_kind[event_kinds.SESSION_PAUSED].reason == "lunch"


def test_edited_arguments_holding_a_lone_surrogate_are_422_and_the_call_stays_pending(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "surrogate")
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    with api.client(api.token(Scope.CONTROL, owner="dana")) as http:
        sid = start(http, agent, cli.plan(fetch, Reply.text("fetched")))
        wait_pending(http, sid)
        bodies = [
            rb'{"approval_id":"a1-0","edited_arguments":{"content":"\ud800"}}',
            rb'{"approval_id":"a1-0","edited_arguments":{"a":[{"b":["ok","x\udfff"]}]}}',
            rb'{"approval_id":"a1-0","edited_arguments":{"a":{"\udc80":1}}}',
            rb'{"approval_id":"a1-0","note":"\ud800"}',
        ]
        for body in bodies:
            r = http.post(
                f"/v1/sessions/{sid}/approve",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
            if b"edited_arguments" in body:
                assert "lone surrogate" in r.json()["error"]["message"], r.text
        assert wait_pending(http, sid)["approval_id"] == "a1-0"
        kept = {"url": f"{cli.stub.url}/x?e=\U0001f600"}  # a pair of surrogates is fine
        ok = http.post(
            f"/v1/sessions/{sid}/approve", json={"approval_id": "a1-0", "edited_arguments": kept}
        )
        assert ok.status_code == 200, ok.text
        wait_status(http, sid, "completed")
