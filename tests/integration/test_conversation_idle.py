"""A conversation (the session of a key) that receives no message for its idle time ends
completed with a ``conversation_idle`` event; the key's next message starts its next
session instead of being refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, poll, wait_status
from tests.support.cli import read_record
from tests.support.llm_stub import Reply
from vigil.workers.keyed import keyed_session_id
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def _define(http: httpx.Client, idle: str | None) -> str:
    name = f"idle-{uuid.uuid4().hex[:8]}"
    text = f"name: {name}\nsystem_prompt: 'Chat. Goal: {{goal}}'\n"
    if idle is not None:
        text += f"conversation_idle_seconds: {idle}\n"
    r = http.post("/v1/agents", content=text, headers={"Content-Type": "application/yaml"})
    return name if r.status_code == 201 else r.text


def _answers(http: httpx.Client, session_id: str) -> list[str]:
    r = http.get(f"/v1/sessions/{session_id}")
    if r.status_code == 404:  # started; in the record once a worker first runs it
        return []
    body = r.json()
    assert r.status_code == 200, (r.status_code, body)
    return [m["content"] for m in body["messages"] if m["role"] == "assistant"]


def test_a_conversation_ends_idle_and_the_key_starts_its_next_session(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = _define(admin, "2")
    goal = cli.plan(Reply.text("first answer"))
    path = f"/v1/agents/{agent}/keys/cust-7/messages"
    sid = keyed_session_id(agent, "cust-7")
    with api.client(api.token(Scope.CONTROL, owner="ana")) as http:
        first = http.post(path, json={"text": "where is my order?", "goal": goal})
        assert first.status_code == 200, first.text
        assert first.json()["session_id"] == sid
        # Answered, then no message within 2 s: the conversation ends, completed.
        ended = wait_status(http, sid, "completed", within=60)
        assert "ended idle" in ended["session"]["summary"], ended["session"]
        assert _answers(http, sid) == ["first answer"]

        again = cli.plan(Reply.text("answer of the next session"))
        later = http.post(path, json={"text": "me again", "goal": again})
        assert later.status_code == 200, later.text
        assert later.json()["accepted"] is True
        nxt = keyed_session_id(agent, "cust-7", 2)
        assert later.json()["session_id"] == nxt != sid

        def answered() -> Any:
            return _answers(http, nxt) == ["answer of the next session"] or None

        poll(answered, 30, "the next session answers")
        wait_status(http, nxt, "waiting_human")
        # The key's messages go to its running session now, not to a third one.
        more = http.post(path, json={"text": "one more thing"})
        assert more.status_code == 200 and more.json()["session_id"] == nxt, more.text
        assert http.post(f"/v1/sessions/{nxt}/cancel", json={"reason": "done"}).is_success
        wait_status(http, nxt, "cancelled")

    row, transcript, events = read_record(cli.database_url, sid)
    assert row.status == "completed"
    [idle] = [e for e in events if e.kind == "conversation_idle"]
    assert idle.payload["idle_seconds"] == 2
    assert [m.content for m in transcript if m.role in ("user", "assistant")] == [
        goal,
        "where is my order?",
        "first answer",
    ]
    _, later_transcript, _ = read_record(cli.database_url, nxt)
    users = [m.content for m in later_transcript if m.role == "user"]
    assert users[:2] == [again, "me again"]


def test_the_message_that_starts_a_conversation_may_set_its_idle_time(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = _define(admin, None)  # the definition's default: 24 hours
        refused = _define(admin, "0")
        assert "conversation_idle_seconds" in refused, refused
    goal = cli.plan(Reply.text("hello"))
    path = f"/v1/agents/{agent}/keys/k/messages"
    with api.client(api.token(Scope.CONTROL)) as http:
        bad = http.post(path, json={"text": "hi", "conversation_idle_seconds": -1})
        assert bad.status_code == 422, bad.text
        assert "conversation_idle_seconds" in bad.text
        r = http.post(path, json={"text": "hi", "goal": goal, "conversation_idle_seconds": 1})
        assert r.status_code == 200, r.text
        ended = wait_status(http, r.json()["session_id"], "completed", within=60)
        assert "no message for 1 s" in ended["session"]["summary"], ended["session"]


def test_a_paused_conversation_waits_for_its_resume_instead_of_ending_idle(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = _define(admin, "2")
    goal = cli.plan(Reply.text("first answer"))
    path = f"/v1/agents/{agent}/keys/held/messages"
    with api.client(api.token(Scope.CONTROL, owner="ana")) as http:
        r = http.post(path, json={"text": "hello", "goal": goal})
        assert r.status_code == 200, r.text
        sid = r.json()["session_id"]
        wait_status(http, sid, "waiting_human")
        paused = http.post(f"/v1/sessions/{sid}/pause", json={"reason": "reading it"})
        assert paused.is_success, paused.text
        # Its idle time passes while paused: the conversation is held, not ended.
        wait_status(http, sid, "paused", within=30)
        assert http.post(f"/v1/sessions/{sid}/resume", json={}).is_success
        ended = wait_status(http, sid, "completed", within=60)
        assert "ended idle" in ended["session"]["summary"], ended["session"]

    _, _, events = read_record(cli.database_url, sid)
    kinds = [e.kind for e in events]
    held = [k for k in kinds if k in ("session_paused", "session_resumed", "conversation_idle")]
    assert held == ["session_paused", "session_resumed", "conversation_idle"], kinds
    [resumed] = [e for e in events if e.kind == "session_resumed"]
    [idle] = [e for e in events if e.kind == "conversation_idle"]
    # The idle time (2 s) counted again from the resume (written just after it).
    assert datetime.fromisoformat(idle.payload["at"]) >= resumed.created_at + timedelta(seconds=1)
