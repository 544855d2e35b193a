"""Inbound triggers: a signed POST starts, messages or wakes an agent's session, once per
delivery; a request not signed with the trigger's secret, or signed too long ago, is 401,
and so is every request to a name that is no trigger."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from tests.support.cli import WorkerProcess
from tests.support.llm_stub import Reply
from tests.support.sessions import forgotten_by_temporal, transcript, until
from tests.support.triggers import create, deliver
from vigil.activities.hooks import signing
from vigil.activities.record import store
from vigil.workers.client import VigilClient
from vigil.workers.hooks import delivery_session_id, key_session_id
from vigil.workers.keyed import keyed_session_id
from vigil.workers.temporal import connect
from vigil.workers.tokens import Scope, TokenService

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with running_api(cli.settings) as server:
        yield server


@pytest.fixture
async def http(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        yield client


async def token(sessionmaker: async_sessionmaker[DbSession], scope: Scope) -> str:
    return (await TokenService(sessionmaker).create("tester", scope=scope)).token


async def sessions_of(sessionmaker: async_sessionmaker[DbSession], agent: str) -> list[str]:
    async with sessionmaker() as db:
        rows = await db.execute(text("SELECT id FROM sessions WHERE agent_id = :a"), {"a": agent})
        return [r[0] for r in rows]


def test_trigger_list_shows_times_to_the_second(cli: CLIStack) -> None:
    name, _ = create(cli, "--agent", "ops", "--goal-template", "{title}")
    listed = cli.vigil.ok("trigger", "list").stdout
    row = next(line for line in listed.splitlines() if name in line)
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", row), listed
    assert "goal: {title}" in row, listed
    cli.vigil.ok("trigger", "delete", name)
    # A keyed message trigger has both templates: the table showed the goal's only.
    both, _ = create(
        cli,
        "--agent", "ops", "--action", "message", "--key-field", "k",
        "--goal-template", "G{k}", "--message-template", "M{k}",
    )  # fmt: skip
    listed = cli.vigil.ok("trigger", "list").stdout
    row = next(line for line in listed.splitlines() if both in line)
    assert "goal: G{k}; message: M{k}" in row, listed
    cli.vigil.ok("trigger", "delete", both)


async def test_a_signed_delivery_starts_a_session_with_the_goal_from_the_body(
    cli: CLIStack,
    api: ApiServer,
    http: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(
        cli, "--agent", agent, "--action", "start", "--goal-template", "Triage #{n}: {title}"
    )
    goal_marker = cli.plan(Reply.text("triaged"), label="crash")
    r = await deliver(http, name, {"n": 42, "title": goal_marker}, secret, delivery="d-1")
    assert r.status_code == 200, r.text
    fired = r.json()
    assert fired["outcome"] == "started" and fired["action"] == "start"
    assert fired["delivery_id"] == "d-1" and fired["replayed"] is False
    row = await until(
        lambda: _finished(sessionmaker, fired["session_id"]), within=60, what="session ends"
    )
    assert row.goal == f"Triage #42: {goal_marker}"
    assert row.status == "completed"
    messages = await transcript(sessionmaker, fired["session_id"])
    assert any(m.content == "triaged" for m in messages)

    admin = await token(sessionmaker, Scope.ADMIN)
    listed = await http.get("/v1/triggers", headers={"Authorization": f"Bearer {admin}"})
    assert listed.status_code == 200
    (mine,) = [t for t in listed.json()["items"] if t["name"] == name]
    assert mine["agent_id"] == agent and mine["goal_template"] == "Triage #{n}: {title}"
    assert secret not in listed.text and "secret" not in mine
    reader = await token(sessionmaker, Scope.READ)
    denied = await http.get("/v1/triggers", headers={"Authorization": f"Bearer {reader}"})
    assert denied.status_code == 403


async def _finished(sessionmaker: async_sessionmaker[DbSession], sid: str) -> object:
    async with sessionmaker() as db:
        row = await store.get_session(db, sid)
    return row if row is not None and row.finished_at is not None else None


async def test_a_wrong_tampered_or_missing_signature_is_401_and_starts_nothing(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {x}")
    body = {"x": "it"}
    cases = {
        "wrong secret": await deliver(http, name, body, "not-the-secret"),
        "no signature": await deliver(http, name, body, None),
        "tampered body": await deliver(http, name, body, secret, signed_body=b'{"x": "other"}'),
    }
    for why, r in cases.items():
        assert r.status_code == 401, (why, r.text)
        assert r.json()["error"]["code"] == "bad_signature", why
    # An unknown name answers as a known one does, so names cannot be found by trying.
    unknown = f"no-such-{uuid.uuid4().hex[:6]}"
    for why, r in {
        "wrong secret": await deliver(http, unknown, body, secret),
        "no signature": await deliver(http, unknown, body, None),
    }.items():
        assert (r.status_code, r.json()) == (cases[why].status_code, cases[why].json()), why
        assert r.headers.get("www-authenticate") == cases[why].headers.get("www-authenticate")
    assert await sessions_of(sessionmaker, agent) == []


async def test_a_stale_timestamp_is_refused_even_when_signed_right(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {x}")
    r = await deliver(http, name, {"x": "late"}, secret, at=time.time() - 3600)
    assert r.status_code == 401
    assert "X-Vigil-Timestamp" in r.json()["error"]["message"]
    assert await sessions_of(sessionmaker, agent) == []


async def test_the_same_delivery_twice_starts_one_session_and_answers_the_same(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {x}")
    body = {"x": cli.plan(Reply.text("done once"))}
    first = await deliver(http, name, body, secret, delivery="same-delivery")
    again = await deliver(http, name, body, secret, delivery="same-delivery")
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["session_id"] == first.json()["session_id"]
    assert again.json()["replayed"] is True
    # The very same signed request again (a replay within the tolerance) with no id.
    sent_at = time.time() - 5
    bare = await deliver(http, name, body, secret, at=sent_at)
    bare_again = await deliver(http, name, body, secret, at=sent_at)
    assert bare.status_code == 200, bare.text
    assert bare_again.json()["session_id"] == bare.json()["session_id"]
    assert bare_again.json()["replayed"] is True
    started = {first.json()["session_id"], bare.json()["session_id"]}
    for sid in started:
        await until(lambda sid=sid: _finished(sessionmaker, sid), within=60, what=sid)
    assert sorted(await sessions_of(sessionmaker, agent)) == sorted(started)


async def test_one_signed_request_sent_at_once_under_many_ids_starts_one_session(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A captured signed request replayed many times at once, each copy with another
    ``X-Vigil-Delivery`` (which the signature does not cover): every copy looked for the
    same body before any had recorded it, and each started a session."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {x}")
    body = {"x": cli.plan(Reply.text("done once"))}
    sent_at = time.time() - 5
    copies = await asyncio.gather(
        *(deliver(http, name, body, secret, at=sent_at, delivery=f"copy-{i}") for i in range(8))
    )
    acted = {r.json()["session_id"] for r in copies if r.status_code == 200}
    assert len(acted) == 1, [(r.status_code, r.text) for r in copies]
    (sid,) = acted
    await until(lambda: _finished(sessionmaker, sid), within=60, what=sid)
    assert await sessions_of(sessionmaker, agent) == [sid]


async def test_a_delivery_sent_again_after_its_session_was_erased_acts_not_again(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """Erasing the session a delivery started scrubs the session from the delivery's kept
    answer but keeps the answer: the sender's retry is told it was acted on (and that what
    it started is erased), and starts nothing again."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {x}")
    body = {"x": cli.plan(Reply.text("done, then erased"))}
    first = await deliver(http, name, body, secret, delivery="erased-delivery")
    assert first.status_code == 200, first.text
    sid = first.json()["session_id"]
    await until(lambda: _finished(sessionmaker, sid), within=60, what=sid)
    erased = cli.vigil("erase", "--session", sid, "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    await forgotten_by_temporal(await connect(cli.settings), sid)  # the id is free again

    again = await deliver(http, name, body, secret, delivery="erased-delivery")
    assert again.status_code == 200, again.text
    assert again.json() == {
        "trigger": name,
        "delivery_id": "erased-delivery",
        "action": "start",
        "outcome": "erased",
        "session_id": None,
        "queued": False,
        "replayed": True,
    }
    assert await sessions_of(sessionmaker, agent) == []
    async with sessionmaker() as db:
        kept = await db.execute(text("SELECT result::text FROM trigger_deliveries"))
        assert not any(sid in str(row[0]) for row in kept)


async def test_a_kept_refusal_naming_an_erased_session_no_longer_names_it(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A keyed start refused because its key's session had ended keeps that refusal for
    the delivery sent again, naming the session (its id holds the sender's key). Once the
    session is erased, the refusal stands without the name."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--key-field", "c", "--goal-template", "{p}")
    body = {"c": f"acct-{uuid.uuid4().hex[:6]}", "p": cli.plan(Reply.text("done"))}
    started = await deliver(http, name, body, secret, delivery="first")
    sid = started.json()["session_id"]
    await until(lambda: _finished(sessionmaker, sid), within=60, what=sid)
    # Signed at another time: the same signed request would be the first delivery again.
    sent_at = time.time() - 5
    refused = await deliver(http, name, body, secret, delivery="second", at=sent_at)
    assert refused.status_code == 409 and sid in refused.text, refused.text

    erased = cli.vigil("erase", "--session", sid, "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["counts"]["trigger_answers_scrubbed"] == 2
    again = await deliver(http, name, body, secret, delivery="second", at=sent_at)
    assert again.status_code == 409, again.text
    assert again.json() == {
        "error": {"code": "refused", "message": "refused: the session it named was erased"}
    }
    async with sessionmaker() as db:
        kept = await db.execute(text("SELECT result::text FROM trigger_deliveries"))
        assert not any(sid in str(row[0]) for row in kept)


async def test_a_trigger_made_again_under_its_name_starts_new_sessions_for_old_ids(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A delivery's session id came from the trigger's name and the delivery's id alone:
    after the trigger was deleted and made again (the way to change its templates), a
    sender numbering its deliveries 1, 2, 3 again had each answered "started" with the old
    trigger's session (or a 409 once that had ended), and nothing it sent was acted on."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "OLD {x}")
    first = await deliver(http, name, {"x": cli.plan(Reply.text("old"))}, secret, delivery="r1")
    assert first.status_code == 200, first.text
    old_sid = first.json()["session_id"]
    await until(lambda: _finished(sessionmaker, old_sid), within=60, what="the old session")
    cli.vigil.ok("trigger", "delete", name)
    made = cli.vigil.json("trigger", "create", name, "--agent", agent, "--goal-template", "NEW {x}")
    again = await deliver(
        http, name, {"x": cli.plan(Reply.text("new"))}, str(made["secret"]), delivery="r1"
    )
    assert again.status_code == 200, again.text
    fired = again.json()
    assert fired["outcome"] == "started" and fired["replayed"] is False, fired
    assert fired["session_id"] != old_sid
    row = await until(
        lambda: _finished(sessionmaker, fired["session_id"]), within=60, what="the new session"
    )
    assert row.goal.startswith("NEW ")
    assert sorted(await sessions_of(sessionmaker, agent)) == sorted([old_sid, fired["session_id"]])


async def test_a_delivery_acted_on_before_the_ids_held_the_trigger_keeps_its_session(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A delivery whose session was started under the id's earlier form (name and delivery
    id only), and which is acted on again after the upgrade, finds that session rather
    than starting a second one."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {x}")
    earlier = delivery_session_id(agent, name, "r7")
    client = await VigilClient.connect(cli.settings)
    try:
        # Still running when the delivery comes (one that ended is refused, 409: a
        # delivery never acts on an ended session), however fast the worker.
        slow = cli.plan(Reply.tool_call("wait_until", {"seconds": 3}), Reply.text("earlier"))
        await client.start_session(agent, slow, session_id=earlier, own_form=True)
    finally:
        await client.close()
    r = await deliver(http, name, {"x": "unused"}, secret, delivery="r7")
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] == earlier
    await until(lambda: _finished(sessionmaker, earlier), within=60, what="the session")
    assert await sessions_of(sessionmaker, agent) == [earlier]


async def test_a_session_under_the_earlier_id_form_from_before_the_trigger_is_not_it(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """The earlier form's session is the delivery's only when it began after the trigger
    was made: by its first run, not its latest (a session continues as new runs, so an
    old trigger's session that went on past the new trigger's making was taken for it)."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name = f"t-{uuid.uuid4().hex[:8]}"
    earlier = delivery_session_id(agent, name, "r9")
    client = await VigilClient.connect(cli.settings)
    try:
        slow = cli.plan(Reply.tool_call("wait_until", {"seconds": 3}), Reply.text("old"))
        await client.start_session(agent, slow, session_id=earlier, own_form=True, steps_per_run=1)
        made = cli.vigil.json("trigger", "create", name, "--agent", agent, "--goal-template", "{x}")

        async def runs() -> int:
            found = [w async for w in client.temporal.list_workflows(f"WorkflowId = '{earlier}'")]
            return len(found)

        # Its second run began after the trigger was made.
        await until(lambda: _at_least(runs, 2), within=60, what="a second run")
    finally:
        await client.close()
    r = await deliver(
        http, name, {"x": cli.plan(Reply.text("new"))}, str(made["secret"]), delivery="r9"
    )
    assert r.status_code == 200, r.text
    assert r.json()["session_id"] != earlier, r.json()


async def _at_least(count: Any, n: int) -> bool:
    return await count() >= n


async def test_a_keyed_message_starts_the_session_then_messages_it(
    cli: CLIStack,
    http: httpx.AsyncClient,
    sessionmaker: async_sessionmaker[DbSession],
    api: ApiServer,
) -> None:
    """A ``message`` trigger reaches the key's conversation, the session `vigil message
    --key` and the API reach for the same key: the first delivery starts it with the goal
    and is its first message (before: the goal alone, the message dropped), and once that
    session has ended the key's next one takes the next delivery (before: 409, for good)."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(
        cli,
        "--agent",
        agent,
        "--action",
        "message",
        "--key-field",
        "customer.id",
        "--goal-template",
        "Support customer {customer.id}: {plan}",
        "--message-template",
        "{text}",
    )
    plan = cli.plan(
        Reply.tool_call("ask_human", {"question": "What is wrong?"}),
        Reply.tool_call("finish", {"summary": "sorted out"}),
    )
    body = {"customer": {"id": 42}, "plan": plan, "text": "hello, it is about my order"}
    first = await deliver(http, name, body, secret)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "started"
    sid = first.json()["session_id"]
    assert sid == keyed_session_id(agent, "42")  # the key's conversation, whoever reaches it

    await until(
        lambda: _in_status(sessionmaker, sid, "waiting_human"),
        within=60,
        what="the session asks a human",
    )
    second = await deliver(http, name, {**body, "text": "my order is late"}, secret)
    assert second.status_code == 200, second.text
    assert second.json()["outcome"] == "messaged" and second.json()["session_id"] == sid
    assert second.json()["queued"] is False  # a worker took it at once
    await until(lambda: _finished(sessionmaker, sid), within=60, what="the session ends")
    messages = await transcript(sessionmaker, sid)
    said = [m.content for m in messages if m.role == "user"]
    assert said[1] == "hello, it is about my order", said
    (answer,) = [m for m in messages if m.role == "tool" and m.name == "ask_human"]
    assert answer.content == f"trigger:{name} replied: my order is late"
    assert await sessions_of(sessionmaker, agent) == [sid]

    # That session has ended: the key's next one takes the next delivery.
    later = await deliver(http, name, {**body, "text": "me again"}, secret)
    assert later.status_code == 200, later.text
    assert later.json()["outcome"] == "started"
    assert later.json()["session_id"] == keyed_session_id(agent, "42", 2)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as admin:
        admin.headers["Authorization"] = f"Bearer {await token(sessionmaker, Scope.ADMIN)}"
        nxt = later.json()["session_id"]
        await until(
            lambda: _recorded(sessionmaker, nxt), within=60, what="the next session recorded"
        )
        assert (await admin.post(f"/v1/sessions/{nxt}/cancel", json={})).is_success

    missing = await deliver(http, name, {"text": "no customer"}, secret, delivery="d-missing")
    assert missing.status_code == 422
    assert "customer.id" in missing.json()["error"]["message"]
    again = await deliver(http, name, {"text": "no customer"}, secret, delivery="d-missing")
    assert again.status_code == 422 and again.json() == missing.json()


async def test_a_delivery_acted_on_again_after_its_request_died_is_taken_once(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A delivery whose request died after it acted, before its result was kept, is
    pending; after STALE_CLAIM_SECONDS the sender's retry acts on it again. The message it
    carried reached the session twice (here: it answered the next question too). Each
    delivery's message is now named by the delivery, so the session takes it once."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(
        cli, "--agent", agent, "--action", "message", "--key-field", "k",
        "--goal-template", "{plan}", "--message-template", "{text}",
    )  # fmt: skip
    plan = cli.plan(
        Reply.tool_call("ask_human", {"question": "What is wrong?"}),
        Reply.tool_call("ask_human", {"question": "Anything else?"}),
        Reply.tool_call("finish", {"summary": "sorted out"}),
    )
    body = {"k": "7", "plan": plan, "text": "hello"}
    first = await deliver(http, name, body, secret, delivery="d-1")
    assert first.status_code == 200, first.text
    sid = first.json()["session_id"]
    asked = lambda: _in_status(sessionmaker, sid, "waiting_human")  # noqa: E731
    await until(asked, within=60, what="the first question")
    late = {**body, "text": "my order is late"}
    second = await deliver(http, name, late, secret, delivery="d-2")
    assert (second.status_code, second.json()["outcome"]) == (200, "messaged"), second.text

    async def answered() -> bool:
        tools = [m for m in await transcript(sessionmaker, sid) if m.name == "ask_human"]
        return len(tools) == 1 and await _in_status(sessionmaker, sid, "waiting_human")

    await until(answered, within=60, what="the second question")
    # d-2's request dies after acting: its row stays pending, and ages past the stale limit.
    async with sessionmaker.begin() as db:
        await db.execute(
            text(
                "UPDATE trigger_deliveries SET state = 'pending', status_code = NULL, "
                "result = NULL, done_at = NULL, received_at = now() - interval '1 hour' "
                "WHERE trigger_name = :t AND delivery_id = 'd-2'"
            ),
            {"t": name},
        )
    retried = await deliver(http, name, late, secret, delivery="d-2")
    assert (retried.status_code, retried.json()["session_id"]) == (200, sid), retried.text
    third = await deliver(http, name, {**body, "text": "no"}, secret, delivery="d-3")
    assert third.status_code == 200, third.text
    await until(lambda: _finished(sessionmaker, sid), within=60, what="the session ends")
    # The second question was answered by d-3 (a second copy of d-2 had answered it, and
    # d-3 then went to the key's next session).
    messages = await transcript(sessionmaker, sid)
    answers = [m.content for m in messages if m.name == "ask_human"]
    assert answers == [
        f"trigger:{name} replied: my order is late",
        f"trigger:{name} replied: no",
    ], [(m.role, m.content) for m in messages]


async def test_a_senders_key_with_c1_controls_still_names_its_conversation(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A key read from a sender's payload may hold DEL and C1 controls (text decoded with
    the wrong charset holds them), as every key could before the API and the CLI refused
    them: its deliveries still reach the key's one conversation."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(
        cli, "--agent", agent, "--action", "message", "--key-field", "who",
        "--goal-template", "Serve {who}: {plan}", "--message-template", "{text}",
    )  # fmt: skip
    plan = cli.plan(
        Reply.tool_call("ask_human", {"question": "What is wrong?"}),
        Reply.tool_call("finish", {"summary": "sorted out"}),
    )
    key = "O\u00e2\u0080\u0099Brien"  # "O\u2019Brien" (a right quote) read as Latin-1
    body = {"who": key, "plan": plan, "text": "hello"}
    first = await deliver(http, name, body, secret)
    assert first.status_code == 200, first.text
    sid = first.json()["session_id"]
    assert sid == keyed_session_id(agent, key)
    await until(lambda: _in_status(sessionmaker, sid, "waiting_human"), within=60, what="it asks")
    second = await deliver(http, name, {**body, "text": "it is late"}, secret)
    assert second.status_code == 200, second.text
    assert (second.json()["outcome"], second.json()["session_id"]) == ("messaged", sid)
    await until(lambda: _finished(sessionmaker, sid), within=60, what="the session ends")


async def _in_status(sessionmaker: async_sessionmaker[DbSession], sid: str, status: str) -> bool:
    async with sessionmaker() as db:
        row = await store.get_session(db, sid)
    return row is not None and row.status == status


async def _recorded(sessionmaker: async_sessionmaker[DbSession], sid: str) -> object:
    async with sessionmaker() as db:
        return await store.get_session(db, sid)


async def test_a_message_reaches_the_session_a_start_trigger_began_for_its_key(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A ``start`` trigger's session of a key (its own id, once per key) takes the key's
    ``message`` deliveries while it runs; the key's conversation is not involved."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    starter, start_secret = create(
        cli, "--agent", agent, "--key-field", "c", "--goal-template", "{plan}"
    )
    name, secret = create(
        cli, "--agent", agent, "--action", "message", "--key-field", "c",
        "--message-template", "{text}",
    )  # fmt: skip
    plan = cli.plan(Reply.tool_call("ask_human", {"question": "Yes?"}), Reply.text("ok"))
    begun = await deliver(http, starter, {"c": 7, "plan": plan}, start_secret)
    assert begun.status_code == 200, begun.text
    sid = begun.json()["session_id"]
    assert (begun.json()["outcome"], sid) == ("started", key_session_id(agent, "7"))
    assert sid != keyed_session_id(agent, "7")

    await until(
        lambda: _in_status(sessionmaker, sid, "waiting_human"),
        within=60,
        what="the session asks a human",
    )
    sent = await deliver(http, name, {"c": 7, "text": "here I am"}, secret)
    assert sent.status_code == 200, sent.text
    assert (sent.json()["outcome"], sent.json()["session_id"]) == ("messaged", sid)
    await until(lambda: _finished(sessionmaker, sid), within=60, what="the session ends")
    # Ended: a start of the key again is refused (once per key), as before.
    again = await deliver(http, starter, {"c": 7, "plan": plan, "n": 2}, start_secret)
    assert again.status_code == 409, again.text


async def test_the_ids_triggers_give_sessions_are_reserved(
    sessionmaker: async_sessionmaker[DbSession], http: httpx.AsyncClient
) -> None:
    """A session started under the id a start trigger gives a key (or one delivery)
    would take that key's deliveries while it runs: nobody may choose such an id."""
    http.headers["Authorization"] = f"Bearer {await token(sessionmaker, Scope.CONTROL)}"
    for sid in (key_session_id("helper", "77"), "helper-trigger-0123456789abcdef"):
        made = await http.post("/v1/sessions", json={"agent": "helper", "goal": "g", "id": sid})
        assert made.status_code == 422, (sid, made.text)
        assert "reserved" in made.json()["error"]["message"]


async def test_a_wake_trigger_wakes_the_sleeping_session_of_its_key(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    starter, start_secret = create(
        cli, "--agent", agent, "--key-field", "order", "--goal-template", "Watch order {order} {m}"
    )
    waker, wake_secret = create(
        cli, "--agent", agent, "--action", "wake", "--key-field", "order",
        "--message-template", "paid: {amount}",
    )  # fmt: skip
    plan = cli.plan(
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "until paid"}),
        Reply.text("shipped"),
    )
    # Signed a few seconds back: the wake below has the same body, and the same signed
    # request would be this delivery again (answered 404 from the record).
    nobody = await deliver(
        http, waker, {"order": "A-1", "amount": 3}, wake_secret, at=time.time() - 5
    )
    assert nobody.status_code == 404, nobody.text
    started = await deliver(http, starter, {"order": "A-1", "m": plan}, start_secret)
    assert started.json()["outcome"] == "started", started.text
    sid = started.json()["session_id"]
    # A new delivery: its own id and its own signature (the same signed request under
    # another id is the first delivery again, answered from the record).
    again = await deliver(
        http,
        starter,
        {"order": "A-1", "m": plan},
        start_secret,
        delivery=uuid.uuid4().hex,
        at=time.time() + 2,
    )
    assert again.json() == {**started.json(), "outcome": "exists", "delivery_id": ANY}

    await until(
        lambda: _in_status(sessionmaker, sid, "sleeping"), within=60, what="the session sleeps"
    )
    woken = await deliver(http, waker, {"order": "A-1", "amount": 3}, wake_secret)
    assert woken.status_code == 200, woken.text
    assert woken.json()["outcome"] == "woken" and woken.json()["session_id"] == sid
    await until(lambda: _finished(sessionmaker, sid), within=60, what="the session ends")
    (slept,) = [m for m in await transcript(sessionmaker, sid) if m.name == "wait_until"]
    assert slept.content.startswith(f"woken early by trigger:{waker}")


async def test_a_rotated_secret_replaces_the_old_one_at_once(
    cli: CLIStack, http: httpx.AsyncClient
) -> None:
    name, old = create(cli, "--agent", "agent-rotate", "--goal-template", "Do {x}")
    rotated = cli.vigil.json("trigger", "rotate-secret", name)
    assert rotated["secret"] != old
    refused = await deliver(http, name, {"y": 1}, old)
    assert refused.status_code == 401
    missing = await deliver(http, name, {"y": 1}, rotated["secret"])
    assert missing.status_code == 422, missing.text  # signed right; the body lacks x
    cli.vigil.ok("trigger", "delete", name)
    gone = await deliver(http, name, {"x": 1}, rotated["secret"])
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "bad_signature"


async def test_a_body_over_the_apis_limit_is_413_before_any_signature_check(
    cli: CLIStack, api: ApiServer, http: httpx.AsyncClient
) -> None:
    name, secret = create(cli, "--agent", "agent-big", "--goal-template", "Do {x}")
    big = {"x": "a" * (api.settings.api_max_body_bytes + 1)}
    r = await deliver(http, name, big, secret)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_a_body_nested_too_deeply_is_400_and_starts_nothing(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent = f"agent-deep-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {issue}")
    deep = b'{"issue":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = await http.post(
        f"/v1/triggers/{name}",
        content=deep,
        headers={"Content-Type": "application/json", **signing.signed_headers(secret, deep)},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "malformed_request"
    assert "nested deeper than" in r.json()["error"]["message"]
    # A number too long for Python's int parser was said to be JSON that is not UTF-8.
    long = b'{"issue": ' + b"7" * 5000 + b"}"
    r = await http.post(
        f"/v1/triggers/{name}",
        content=long,
        headers={"Content-Type": "application/json", **signing.signed_headers(secret, long)},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "a number in the body has more than 4300 digits"
    assert await sessions_of(sessionmaker, agent) == []


async def test_a_nul_in_a_field_the_goal_takes_is_422_and_starts_nothing(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    # A session's goal cannot hold NUL as it is (it would read back as the text "\0").
    agent = f"agent-nul-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {title}")
    r = await deliver(http, name, {"title": "a\x00b"}, secret)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert "NUL" in r.json()["error"]["message"]
    assert await sessions_of(sessionmaker, agent) == []


async def test_a_lone_surrogate_in_the_body_is_422_and_starts_nothing(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    agent = f"agent-sur-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {title}")
    body = b'{"title": "half \\ud800 a pair"}'
    r = await deliver(http, name, None, secret, raw=body)
    assert r.status_code == 422, r.text
    assert "surrogate" in r.json()["error"]["message"]
    assert await sessions_of(sessionmaker, agent) == []


@pytest.mark.timeout(300)  # a worker process started within
async def test_deliveries_while_no_worker_polls_are_kept_for_the_next_worker(
    cli: CLIStack, sessionmaker: async_sessionmaker[DbSession], tmp_path: Path
) -> None:
    """A sender's delivery is not refused because no worker polls (one restarting, say):
    messages to a key's conversation, and to the session a start trigger began for a key,
    are left with Temporal and taken, in order, by the worker that comes next (before:
    409 ``no_worker``, and the sender had to send again)."""
    queue = f"tq-trig-{uuid.uuid4().hex[:8]}"
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    talk, talk_secret = create(
        cli, "--agent", agent, "--action", "message", "--key-field", "c",
        "--goal-template", "{plan}", "--message-template", "{text}",
    )  # fmt: skip
    starter, start_secret = create(
        cli, "--agent", agent, "--key-field", "c", "--goal-template", "{plan}"
    )
    plan = cli.plan(Reply.tool_call("finish", {"summary": "read them"}))
    with running_api(cli.settings.model_copy(update={"task_queue": queue})) as lonely:
        async with httpx.AsyncClient(base_url=lonely.base_url, timeout=30) as http:
            first = await deliver(http, talk, {"c": 1, "plan": plan, "text": "one"}, talk_secret)
            assert first.status_code == 200, first.text
            chat = first.json()["session_id"]
            assert (first.json()["outcome"], chat) == ("started", keyed_session_id(agent, "1"))
            assert first.json()["queued"] is True
            second = await deliver(http, talk, {"c": 1, "plan": plan, "text": "two"}, talk_secret)
            assert second.status_code == 200, second.text
            assert (second.json()["outcome"], second.json()["session_id"]) == ("messaged", chat)
            assert second.json()["queued"] is True

            begun = await deliver(http, starter, {"c": 2, "plan": plan}, start_secret)
            assert begun.status_code == 200, begun.text
            keyed = begun.json()["session_id"]
            told = await deliver(http, talk, {"c": 2, "plan": plan, "text": "three"}, talk_secret)
            assert told.status_code == 200, told.text
            assert (told.json()["outcome"], told.json()["session_id"]) == ("messaged", keyed)
            assert told.json()["queued"] is True

    worker = WorkerProcess({**cli.vigil.env, "VIGIL_TASK_QUEUE": queue}, tmp_path / "w.log")
    worker.start()
    try:
        for sid in (chat, keyed):
            await until(lambda s=sid: _finished(sessionmaker, s), within=90, what="it ends")
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    said = [m.content for m in await transcript(sessionmaker, chat) if m.role == "user"]
    assert said[1:] == ["one", "two"], said
    said = [m.content for m in await transcript(sessionmaker, keyed) if m.role == "user"]
    assert said[1:] == ["three"], said


async def test_a_delivery_giving_a_key_twice_is_taken_as_its_sender_wrote_it(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """vigil's own routes refuse a JSON body that gives a key twice; a signed delivery is
    another system's body, and refusing it would lose it: taken, its templates reading the
    value Python's parser keeps (the last)."""
    agent = f"agent-twin-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--goal-template", "Do {issue}")
    twin = b'{"issue": "first", "issue": "second"}'
    r = await deliver(http, name, None, secret, raw=twin)
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    row = await until(lambda: _recorded(sessionmaker, sid), within=60, what="session recorded")
    assert row.goal == "Do second"  # type: ignore[attr-defined]


def test_a_trigger_name_too_long_says_so(cli: CLIStack) -> None:
    """A 201-character name was told only which characters a name may hold."""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    for name in ("x" * 101, "x" * 201, "_lead"):
        refused = cli.vigil("trigger", "create", name, "--agent", agent, "--goal-template", "g")
        assert refused.returncode == 2, refused.stderr
        assert "1 to 100 letters, digits" in refused.stderr, refused.stderr
    assert cli.vigil.json("trigger", "create", "x" * 100, "--agent", agent, "--goal-template", "g")
    cli.vigil.ok("trigger", "delete", "x" * 100)


async def test_a_keyed_start_refused_for_a_taken_id_is_told_as_the_api_tells_it(
    cli: CLIStack, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """The trigger's 409 said "choose another --id": the CLI's words, to a sender. (A key
    whose session Temporal deleted before a reconcile pass closed its record.)"""
    agent = f"agent-trig-{uuid.uuid4().hex[:6]}"
    name, secret = create(cli, "--agent", agent, "--key-field", "c", "--goal-template", "{p}")
    plan = cli.plan(Reply.tool_call("ask_human", {"question": "wait"}), Reply.text("done"))
    body = {"c": f"acct-{uuid.uuid4().hex[:6]}", "p": plan}
    started = await deliver(http, name, body, secret, delivery="one")
    assert started.status_code == 200, started.text
    sid = started.json()["session_id"]

    async def waiting() -> object:
        async with sessionmaker() as db:
            row = await store.get_session(db, sid)
        return row is not None and row.status == "waiting_human"

    await until(waiting, within=60, what=f"{sid} waits for a reply")
    temporal = await connect(cli.settings)
    await temporal.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=temporal.namespace, workflow_execution=WorkflowExecution(workflow_id=sid)
        )
    )
    await forgotten_by_temporal(temporal, sid)
    # Another body (the same one is the same delivery, answered as it was).
    again = await deliver(http, name, {**body, "n": 2}, secret, delivery="two")
    assert again.status_code == 409, again.text
    assert again.json()["error"]["message"] == (
        f"a session with id {sid!r} already exists; choose another id"
    )
