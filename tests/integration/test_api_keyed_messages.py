"""A message to the session of a key, starting it if it does not run, in one atomic call:
two clients racing on a new key end with one session holding both messages."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, poll, wait_pending, wait_status
from tests.support.cli import read_record
from tests.support.llm_stub import Reply
from vigil.schema.payloads import MAX_HUMAN_TEXT
from vigil.workers.keyed import keyed_session_id
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def test_two_clients_racing_on_a_new_key_share_one_session(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "keyed")
    # The session waits for an approval, so it is still running for both messages.
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    goal = cli.plan(
        fetch, Reply.text("answered both"), Reply.tool_call("finish", {"summary": "bye"})
    )
    path = f"/v1/agents/{agent}/keys/customer-42/messages"
    tokens = {
        "ana": api.token(Scope.CONTROL, owner="ana"),
        "bob": api.token(Scope.CONTROL, owner="bob"),
    }
    barrier = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def send(owner: str) -> None:
        with api.client(tokens[owner]) as http:
            barrier.wait()
            answers[owner] = http.post(path, json={"text": f"hello from {owner}", "goal": goal})

    racers = [threading.Thread(target=send, args=(owner,)) for owner in tokens]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    assert set(answers) == {"ana", "bob"}
    for owner, r in answers.items():
        assert r.status_code == 200, (owner, r.text)
        assert r.json()["accepted"] is True
        assert r.json()["follows"] is None
    sid = keyed_session_id(agent, "customer-42")
    assert {r.json()["session_id"] for r in answers.values()} == {sid}

    with api.client(tokens["ana"]) as http:
        wait_pending(http, sid)
        listed = http.get("/v1/sessions", params={"agent": agent}).json()["items"]
        assert [s["id"] for s in listed] == [sid], "one session for the key"
        assert http.post(f"/v1/sessions/{sid}/approve", json={"approval_id": "a1-0"}).is_success
        # The reply answers both messages; the conversation waits for the next one.
        wait_status(http, sid, "waiting_human")
        assert http.post(path, json={"text": "that is all", "goal": goal}).is_success
        wait_status(http, sid, "completed")  # the agent ended it with finish
        # The ended session is not started again: the key's next session takes it.
        late = http.post(path, json={"text": "anyone there?", "goal": goal})
        assert late.status_code == 200, late.text
        nxt = late.json()["session_id"]
        assert nxt == keyed_session_id(agent, "customer-42", 2)
        assert late.json()["follows"] == sid
        # In the record once a worker first runs it: then the API may cancel it.
        poll(lambda: http.get(f"/v1/sessions/{nxt}").status_code == 200, 30, "recorded")
        assert http.post(f"/v1/sessions/{nxt}/cancel", json={}).is_success

    _, transcript, events = read_record(cli.database_url, sid)
    users = [m for m in transcript if m.role == "user"]
    assert users[0].content == goal
    assert sorted((m.content, m.name) for m in users[1:3]) == [
        ("hello from ana", "ana"),
        ("hello from bob", "bob"),
    ]
    assert (users[3].content, users[3].name) == ("that is all", "ana")
    assert sorted(e.actor for e in events if e.kind == "human_message") == ["ana", "ana", "bob"]


def test_the_session_of_a_key_answers_message_after_message(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "chat")
    goal = cli.plan(Reply.text("first answer"), Reply.text("second answer"))
    path = f"/v1/agents/{agent}/keys/cust-1/messages"
    sid = keyed_session_id(agent, "cust-1")
    with api.client(api.token(Scope.CONTROL, owner="ana")) as http:
        first = http.post(path, json={"text": "my order is late", "goal": goal})
        assert first.status_code == 200, first.text
        wait_status(http, sid, "waiting_human")
        second = http.post(path, json={"text": "and the invoice?", "goal": goal})
        assert second.status_code == 200 and second.json()["accepted"], second.text
        assert second.json()["session_id"] == sid

        def answered_twice() -> Any:
            body = http.get(f"/v1/sessions/{sid}").json()
            said = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
            ok = said == ["first answer", "second answer"]
            return body if ok and body["session"]["status"] == "waiting_human" else None

        poll(answered_twice, 30, "both messages answered in one session")
        assert http.post(f"/v1/sessions/{sid}/cancel", json={"reason": "done"}).is_success
        wait_status(http, sid, "cancelled")
    _, transcript, _ = read_record(cli.database_url, sid)
    assert [m.content for m in transcript if m.role in ("user", "assistant")] == [
        goal,
        "my order is late",
        "first answer",
        "and the invoice?",
        "second answer",
    ]


def test_keyed_messages_are_checked(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent, other = define(admin, "keyed"), define(admin, "keyed")
    path = f"/v1/agents/{agent}/keys/k1/messages"
    with api.client(api.token(Scope.READ)) as reader:
        assert reader.post(path, json={"text": "hi"}).status_code == 403
    with api.client(api.token(Scope.CONTROL, agents=[other])) as scoped:
        assert scoped.post(path, json={"text": "hi"}).status_code == 403
    with api.client(api.token(Scope.CONTROL)) as http:
        undefined = http.post("/v1/agents/nobody-at-all/keys/k1/messages", json={"text": "hi"})
        assert undefined.status_code == 404 and undefined.json()["error"]["code"] == "unknown_agent"
        big = http.post(path, json={"text": "x" * (MAX_HUMAN_TEXT + 1)})
        assert big.status_code == 422
        assert http.post(path, json={}).status_code == 422
        control_key = http.post(f"/v1/agents/{agent}/keys/a%01b/messages", json={"text": "hi"})
        assert control_key.status_code == 422
    with api.client(api.token(Scope.CONTROL)) as http:
        listed = http.get("/v1/sessions", params={"agent": agent}).json()["items"]
        assert listed == [], "a refused message started a session"


def test_a_control_token_cannot_start_without_the_definitions_approvals(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "gated")  # http_fetch: approval = "always"
    goal = cli.plan(Reply.text("hello"))
    control = api.token(Scope.CONTROL, owner="carol")
    with api.client(control) as http:
        for path, body in (
            ("/v1/sessions", {"agent": agent, "goal": goal, "approve_tools": []}),
            (f"/v1/agents/{agent}/keys/k1/messages", {"text": "hi", "approve_tools": ["x"]}),
        ):
            r = http.post(path, json=body)
            assert r.status_code == 403, (path, r.text)
            assert "http_fetch" in r.json()["error"]["message"]
        kept = http.post(
            "/v1/sessions",
            json={"agent": agent, "goal": goal, "approve_tools": ["http_fetch", "finish"]},
        )
        assert kept.status_code == 201, kept.text  # adding to the gates is anyone's
    with api.client(api.token(Scope.ADMIN)) as admin:
        ungated = admin.post(
            "/v1/sessions", json={"agent": agent, "goal": goal, "approve_tools": []}
        )
        assert ungated.status_code == 201, ungated.text


def test_a_keyed_start_naming_a_tool_the_agent_lacks_is_refused(
    cli: CLIStack, api: ApiServer
) -> None:
    """As a start's: an approval list whose only name is a typo would leave every tool of
    the key's session unasked."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "keyed-typo")
        r = admin.post(
            f"/v1/agents/{agent}/keys/k1/messages",
            json={"text": "hi", "approve_tools": ["htp_fetch"]},
        )
    assert r.status_code == 422, r.text
    assert "'htp_fetch'" in r.json()["error"]["message"], r.text


def test_a_key_holding_a_slash_is_reached_as_from_the_cli(cli: CLIStack, api: ApiServer) -> None:
    """`vigil message ops --key org/repo#12` takes any key, but the API's path ended at the
    key's slash, sent as %2F: a 404 for a key the CLI reaches. The key is now the whole
    segment between keys/ and /messages, slashes included."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "keyed")
    key = "org/repo#12"
    goal = cli.plan(Reply.text("looked"))
    with api.client(api.token(Scope.CONTROL)) as http:
        sent = http.post(
            f"/v1/agents/{agent}/keys/org%2Frepo%2312/messages", json={"text": "hi", "goal": goal}
        )
        assert sent.status_code in (200, 201), sent.text
        assert sent.json()["session_id"] == keyed_session_id(agent, key)


def test_start_options_sent_to_a_running_key_are_reported_not_taken(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "chat-opts")
    goal = cli.plan(Reply.text("first answer"), Reply.text("second answer"))
    path = f"/v1/agents/{agent}/keys/cust-9/messages"
    sid = keyed_session_id(agent, "cust-9")
    with api.client(api.token(Scope.CONTROL, owner="ana")) as http:
        first = http.post(path, json={"text": "hi", "goal": goal, "conversation_idle_seconds": 600})
        assert first.status_code == 200, first.text
        # This message started the session: it took its options.
        assert first.json()["started"] is True
        assert first.json()["not_taken"] == []
        wait_status(http, sid, "waiting_human")
        again = http.post(
            path,
            json={
                "text": "and then?",
                "goal": "another goal",
                "conversation_idle_seconds": 5,
                "agent_version": 1,
                "budget": {"max_steps": 3},
            },
        )
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["accepted"] is True and body["session_id"] == sid
        assert body["started"] is False
        assert body["not_taken"] == ["agent_version", "budget", "conversation_idle_seconds", "goal"]
        # A plain message asks nothing of a start: nothing to report.
        plain = http.post(path, json={"text": "thanks"}).json()
        assert plain["started"] is None and plain["not_taken"] == []
        assert http.post(f"/v1/sessions/{sid}/cancel", json={"reason": "done"}).is_success
        wait_status(http, sid, "cancelled")


def test_a_message_to_a_key_whose_session_temporal_deleted_goes_to_its_next_one(
    cli: CLIStack, api: ApiServer
) -> None:
    """Deleted in Temporal (by hand, or its retention) before a reconcile pass closed its
    record: the message started a new run under the old id, whose writes met the old
    record's seqs, and was acknowledged and lost (no model call, nothing recorded)."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "deleted")
    goal = cli.plan(Reply.text("first answer"), Reply.text("second answer"))
    path = f"/v1/agents/{agent}/keys/cust-9/messages"
    sid = keyed_session_id(agent, "cust-9")
    with api.client(api.token(Scope.CONTROL, owner="ana")) as http:
        assert http.post(path, json={"text": "hello 1", "goal": goal}).status_code == 200
        wait_status(http, sid, "waiting_human")
        _delete_in_temporal(cli, sid)
        after = http.post(path, json={"text": "hello after delete", "goal": goal})
        assert after.status_code == 200, after.text
        moved = after.json()
        assert moved["session_id"] == keyed_session_id(agent, "cust-9", 2), moved
        assert moved["follows"] == sid
        wait_status(http, moved["session_id"], "waiting_human")
    old = read_record(cli.database_url, sid)[0]
    assert old is not None and old.status not in ("running", "waiting_human"), old
    _, transcript, _ = read_record(cli.database_url, moved["session_id"])
    assert [m.content for m in transcript if m.role == "user"][-1] == "hello after delete"


def _delete_in_temporal(cli: CLIStack, session_id: str) -> None:
    async def go() -> None:
        from temporalio.api.common.v1 import WorkflowExecution
        from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

        from tests.support.sessions import forgotten_by_temporal
        from vigil.workers.temporal import connect

        client = await connect(cli.settings)
        await client.workflow_service.delete_workflow_execution(
            DeleteWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=session_id),
            )
        )
        await forgotten_by_temporal(client, session_id)

    asyncio.run(go())
