"""Sessions over HTTP: started with `vigil start`'s checks, listed with filters and a
cursor that stays stable while new sessions start, shown with their live state, read back
by page (transcript, events) and exported; unknown ids are 404, bad input a 4xx, and a
token sees only its agents' sessions."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from temporalio.client import WorkflowExecutionDescription

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_pending, wait_status
from tests.support.cli import terminate_session
from tests.support.llm_stub import Reply
from vigil.schema.payloads import MAX_HUMAN_TEXT
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


@pytest.fixture(scope="module")
def agent(api: ApiServer) -> str:
    with api.client(api.token(Scope.ADMIN)) as http:
        return define(http, "sess")


def start(http: httpx.Client, agent: str, goal: str, **extra: Any) -> str:
    r = http.post("/v1/sessions", json={"agent": agent, "goal": goal, **extra})
    assert r.status_code == 201, r.text
    sid: str = r.json()["id"]
    return sid


def test_start_show_transcript_events_export(cli: CLIStack, api: ApiServer, agent: str) -> None:
    goal = cli.plan(Reply.text("all done here"))
    with api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, agent, goal, budget={"max_steps": 4})
        done = wait_status(http, sid, "completed")
        assert done["session"]["agent_id"] == agent and done["state"] is None

        shown = http.get(f"/v1/sessions/{sid}", params={"last": 2}).json()
        assert [m["role"] for m in shown["messages"]] == ["assistant", "system"]

        whole = http.get(f"/v1/sessions/{sid}/transcript", params={"limit": 500}).json()
        assert whole["next_after_seq"] is None
        seqs = [m["seq"] for m in whole["items"]]
        assert whole["items"][0]["content"] == goal and len(seqs) >= 3
        paged, after = [], -1
        while True:
            page = http.get(
                f"/v1/sessions/{sid}/transcript", params={"after_seq": after, "limit": 1}
            ).json()
            paged += [m["seq"] for m in page["items"]]
            if page["next_after_seq"] is None:
                break
            after = page["next_after_seq"]
        assert paged == seqs

        events = http.get(f"/v1/sessions/{sid}/events").json()["items"]
        assert events[-1]["kind"] == "session_ended"
        first = http.get(f"/v1/sessions/{sid}/events", params={"limit": 1}).json()
        rest = http.get(f"/v1/sessions/{sid}/events", params={"after": first["next_after"]})
        assert first["items"] + rest.json()["items"] == events
        ended = http.get(f"/v1/sessions/{sid}/events", params={"kind": "session_ended"}).json()
        assert [e["payload"]["status"] for e in ended["items"]] == ["completed"]

        jsonl = http.get(f"/v1/sessions/{sid}/export")
        assert jsonl.status_code == 200 and jsonl.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in jsonl.text.splitlines()]
        assert lines[0]["type"] == "session" and lines[0]["session"]["id"] == sid
        assert [x["seq"] for x in lines[1:] if x["type"] == "message"] == seqs
        md = http.get(f"/v1/sessions/{sid}/export", params={"format": "markdown"})
        assert md.status_code == 200 and md.text.startswith(f"# Session `{sid}`")
        assert "all done here" in md.text
        # As the CLI takes it (`md` was a 422), and named after the session.
        short = http.get(f"/v1/sessions/{sid}/export", params={"format": "md"})
        assert short.status_code == 200 and short.text == md.text
        assert f'filename="{sid}.md"' in short.headers["content-disposition"]
        assert f'filename="{sid}.jsonl"' in jsonl.headers["content-disposition"]


def test_start_is_checked_like_vigil_start(cli: CLIStack, api: ApiServer, agent: str) -> None:
    with api.client(api.token(Scope.CONTROL)) as http:
        undefined = http.post("/v1/sessions", json={"agent": "nobody-here", "goal": "g"})
        assert undefined.status_code == 404, undefined.text
        assert undefined.json()["error"]["code"] == "unknown_agent"
        said = undefined.json()["error"]["message"]
        assert "has no definition" in said
        # What an HTTP client can act on: the server's setting, named as such.
        assert "VIGIL_ALLOW_UNDEFINED_AGENTS=1 where sessions are started" in said, said
        version = http.post("/v1/sessions", json={"agent": agent, "goal": "g", "agent_version": 9})
        assert version.status_code == 404 and "no version 9" in version.text

        sid = start(http, agent, cli.plan(Reply.text("ok")))
        wait_status(http, sid, "completed")
        taken = http.post("/v1/sessions", json={"agent": agent, "goal": "g", "id": sid})
        assert taken.status_code == 409 and "already exists" in taken.text
        assert taken.json()["error"]["code"] == "conflict"

        big = http.post("/v1/sessions", json={"agent": agent, "goal": "x" * (MAX_HUMAN_TEXT + 1)})
        assert big.status_code == 422 and big.json()["error"]["code"] == "invalid_request"
        malformed = http.post(
            "/v1/sessions", content=b'{"agent": ', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "malformed_request"
        nul_id = http.post("/v1/sessions", json={"agent": agent, "goal": "g", "id": "a\x00b"})
        assert nul_id.status_code == 422, nul_id.text
        # An id ending in a line feed was started (a 201): its export then broke its
        # Content-Disposition header and the connection dropped with no answer.
        lf_id = http.post("/v1/sessions", json={"agent": agent, "goal": "g", "id": "lf-id\n"})
        assert lf_id.status_code == 422, lf_id.text
        nul_goal = http.post("/v1/sessions", json={"agent": agent, "goal": "a\x00b"})
        assert nul_goal.status_code == 422 and "NUL" in nul_goal.json()["error"]["message"]
        bad_budget = http.post(
            "/v1/sessions", json={"agent": agent, "goal": "g", "budget": {"max_steps": 0}}
        )
        assert bad_budget.status_code == 422
        # A count given as true or as a string was taken (true as 1: the session ended at
        # its first step), where other wrong types are refused.
        for count in (True, "3", 2.5):
            coerced = http.post(
                "/v1/sessions", json={"agent": agent, "goal": "g", "budget": {"max_steps": count}}
            )
            assert coerced.status_code == 422, (count, coerced.text)
        for unknown in (
            {"budgett": {"max_steps": 1}},
            {"budget": {"max_stepz": 1}},
            {"approve": ["http_fetch"]},
        ):
            r = http.post("/v1/sessions", json={"agent": agent, "goal": "g", **unknown})
            assert r.status_code == 422, (unknown, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
            assert "Extra inputs are not permitted" in r.json()["error"]["message"], r.text
        keyed = http.post(f"/v1/agents/{agent}/keys/k1/messages", json={"text": "t", "txt": "t"})
        assert keyed.status_code == 422, keyed.text


def test_list_filters_and_a_stable_cursor(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "list")
        ids = [start(http, agent, cli.plan(Reply.text(f"done {i}"))) for i in range(5)]
        for sid in ids:
            wait_status(http, sid, "completed")

        listed = http.get("/v1/sessions", params={"agent": agent}).json()
        order = [s["id"] for s in listed["items"]]  # newest first, as recorded
        assert sorted(order) == sorted(ids) and listed["next_cursor"] is None
        stamps = [s["created_at"] for s in listed["items"]]
        assert stamps == sorted(stamps, reverse=True)

        first = http.get("/v1/sessions", params={"agent": agent, "limit": 2}).json()
        seen = [s["id"] for s in first["items"]]
        newer = start(http, agent, cli.plan(Reply.text("started while paging")))
        wait_status(http, newer, "completed")
        cursor = first["next_cursor"]
        while cursor:
            page = http.get(
                "/v1/sessions", params={"agent": agent, "limit": 2, "cursor": cursor}
            ).json()
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
        assert seen == order, "a session started meanwhile shifted or repeated a page"

        done = http.get("/v1/sessions", params={"agent": agent, "status": "completed"}).json()
        assert {s["id"] for s in done["items"]} == {*ids, newer}
        # Temporal's view beside the record's (it may lag or lead the record).
        assert all("temporal_status" in s for s in done["items"])
        running = http.get("/v1/sessions", params={"agent": agent, "status": "running"}).json()
        assert running["items"] == []
        later = http.get("/v1/sessions", params={"agent": agent, "since": "2999-01-01T00:00:00Z"})
        assert later.json()["items"] == []
        naive = http.get("/v1/sessions", params={"agent": agent, "since": "2000-01-01T00:00:00"})
        assert len(naive.json()["items"]) == 6, naive.text
        by_schedule = http.get("/v1/sessions", params={"agent": agent, "schedule": "none"})
        assert by_schedule.json()["items"] == []

        bad_status = http.get("/v1/sessions", params={"status": "sleepy"})
        assert bad_status.status_code == 422
        assert bad_status.json()["error"]["code"] == "invalid_request"
        # The last: a cursor of 1,400 nested lists (JSON too deep for Python's parser)
        # was a 500 on every route that pages by cursor.
        nested = base64.urlsafe_b64encode(b"[" * 1400).decode().rstrip("=")
        for cursor in ("nonsense", "eyJ4IjoxfQ", "W10", nested):
            bad = http.get("/v1/sessions", params={"cursor": cursor})
            assert bad.status_code == 422, (cursor, bad.text)
            assert bad.json()["error"]["code"] == "invalid_request", bad.text
        for route in ("/v1/approvals", "/v1/schedules/no-such-schedule/runs"):
            deep = http.get(route, params={"cursor": nested})
            assert deep.status_code in (404, 422), (route, deep.text)
        assert http.get("/v1/sessions", params={"agent": "a\x00b"}).status_code == 422
        assert http.get("/v1/sessions", params={"limit": 0}).status_code == 422

    listed_by_cli = cli.vigil.json("list", "--agent", agent, "--limit", "3")
    assert [r["id"] for r in listed_by_cli] == [newer, *order[:2]]


def test_unknown_ids_cancel_and_what_tokens_see(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        mine, theirs = define(admin, "mine"), define(admin, "theirs")
    fetch = Reply.tool_call("http_fetch", {"url": f"{cli.stub.url}/x"})
    with api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, theirs, cli.plan(fetch, Reply.text("fetched")))
        wait_pending(http, sid)
        for path in ("", "/transcript", "/events", "/export"):
            for missing in ("no-such-session", "nul%00id"):
                r = http.get(f"/v1/sessions/{missing}{path}")
                assert r.status_code == 404, (path, missing, r.text)
                assert r.json()["error"]["code"] == "unknown_session"
        assert http.post("/v1/sessions/no-such-session/cancel").status_code == 404

    with api.client(api.token(Scope.READ)) as reader:
        assert reader.get(f"/v1/sessions/{sid}").status_code == 200
        refused = reader.post("/v1/sessions", json={"agent": theirs, "goal": "g"})
        assert refused.status_code == 403
        assert reader.post(f"/v1/sessions/{sid}/cancel").status_code == 403

    with api.client(api.token(Scope.CONTROL, agents=[mine])) as scoped:
        for path in ("", "/transcript", "/events", "/export"):
            assert scoped.get(f"/v1/sessions/{sid}{path}").status_code == 404, path
        assert scoped.post(f"/v1/sessions/{sid}/cancel").status_code == 404
        listed = scoped.get("/v1/sessions").json()["items"]
        assert all(s["agent_id"] == mine for s in listed)
        assert scoped.get("/v1/sessions", params={"agent": theirs}).status_code == 403
        start_theirs = scoped.post("/v1/sessions", json={"agent": theirs, "goal": "g"})
        assert start_theirs.status_code == 403
        assert start_theirs.json()["error"]["code"] == "forbidden"

    with api.client(api.token(Scope.CONTROL)) as http:
        cancelled = http.post(f"/v1/sessions/{sid}/cancel", json={"reason": "wrong agent"})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["accepted"] is True
        wait_status(http, sid, "cancelled")
        # The record names who cancelled (the token's owner) and why.
        events = http.get(f"/v1/sessions/{sid}/events").json()["items"]
        [ended] = [e for e in events if e["kind"] == "session_ended"]
        assert (ended["actor"], ended["reason"]) == ("tester", "wrong agent"), ended
        shown = http.get(f"/v1/sessions/{sid}").json()["session"]
        assert shown["summary"] == "cancelled by tester: wrong agent"
        again = http.post(f"/v1/sessions/{sid}/cancel")
        assert again.status_code == 409 and "already ended" in again.json()["error"]["message"]


async def describe_session(settings: Settings, session_id: str) -> WorkflowExecutionDescription:
    return await (await connect(settings)).get_workflow_handle(session_id).describe()


def test_a_scoped_token_learns_nothing_of_another_agents_unrecorded_session(
    cli: CLIStack, api: ApiServer
) -> None:
    """A session started where no worker takes it has no record yet: to a token scoped
    to other agents, its id was answered "no worker takes it" (409) or "no record yet"
    (404 not_recorded_yet), where an id nobody started is 404 unknown_session."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        mine, theirs = define(admin, "mine"), define(admin, "theirs")
    queue = f"tq-nobody-{uuid.uuid4().hex[:8]}"
    started = cli.vigil.json(
        "start", "--agent", theirs, "waits for a worker", env={"VIGIL_TASK_QUEUE": queue}
    )
    sid = started["id"]
    try:
        with api.client(api.token(Scope.CONTROL, agents=[mine])) as scoped:
            for method, path in (
                ("GET", ""),
                ("GET", "/transcript"),
                ("GET", "/events"),
                ("GET", "/artifacts"),
                ("GET", "/stream"),
                ("POST", "/cancel"),
                ("POST", "/pause"),
            ):
                r = scoped.request(method, f"/v1/sessions/{sid}{path}")
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"] == {
                    "code": "unknown_session",
                    "message": f"no session with id {sid!r}",
                }, (method, path)
        # Whoever may know of the agent is told what holds the session up.
        with api.client(api.token(Scope.CONTROL, agents=[theirs])) as own:
            r = own.get(f"/v1/sessions/{sid}")
            assert r.status_code == 409 and r.json()["error"]["code"] == "no_worker", r.text
            # And may cancel it, as `vigil cancel` does: Temporal keeps the cancel until a
            # worker takes the session (the API answered 409 no_worker, and could not).
            cancelled = own.post(f"/v1/sessions/{sid}/cancel", json={"reason": "wrong queue"})
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json() == {"id": sid, "accepted": True, "status": "unrecorded"}
            desc = asyncio.run(describe_session(cli.settings, sid))
            assert desc.raw_description.workflow_extended_info.cancel_requested
            again = own.post(f"/v1/sessions/{sid}/cancel")
            assert again.status_code == 409 and "being cancelled" in again.text, again.text
    finally:
        terminate_session(cli.settings, sid)


def test_cancel_of_a_failed_session_says_failed(cli: CLIStack, api: ApiServer, agent: str) -> None:
    """The 409 names the session's own status (`failed`, as shown), not Temporal's
    (`completed`: a session that ends failed returns normally)."""
    goal = cli.plan(Reply.tool_call("finish", {"summary": "could not", "succeeded": False}))
    with api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, agent, goal)
        wait_status(http, sid, "failed")
        again = http.post(f"/v1/sessions/{sid}/cancel")
        assert again.status_code == 409, again.text
        assert again.json()["error"]["message"] == f"session {sid!r} has already ended (failed)"


def test_transcript_next_after_seq_is_null_exactly_when_no_message_follows(
    cli: CLIStack, api: ApiServer, agent: str
) -> None:
    """A page cut at its limit says where the next begins only when a message follows it:
    a last page exactly full says null (before, it pointed on to one empty page)."""
    with api.client(api.token(Scope.READ)) as reader, api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, agent, cli.plan(Reply.text("done")))
        wait_status(http, sid, "completed")
        path = f"/v1/sessions/{sid}/transcript"
        whole = reader.get(path, params={"limit": 500}).json()
        seqs = [m["seq"] for m in whole["items"]]
        assert len(seqs) >= 3 and whole["next_after_seq"] is None

        full = reader.get(path, params={"limit": len(seqs)}).json()
        assert [m["seq"] for m in full["items"]] == seqs
        assert full["next_after_seq"] is None, full["next_after_seq"]
        tail = reader.get(path, params={"after_seq": seqs[0], "limit": len(seqs) - 1}).json()
        assert [m["seq"] for m in tail["items"]] == seqs[1:] and tail["next_after_seq"] is None

        cut = reader.get(path, params={"limit": len(seqs) - 1}).json()
        assert [m["seq"] for m in cut["items"]] == seqs[:-1]
        assert cut["next_after_seq"] == seqs[-2]
        rest = reader.get(
            path, params={"after_seq": cut["next_after_seq"], "limit": len(seqs) - 1}
        ).json()
        assert [m["seq"] for m in rest["items"]] == seqs[-1:] and rest["next_after_seq"] is None


def test_events_next_after_is_null_exactly_when_no_event_follows(
    cli: CLIStack, api: ApiServer, agent: str
) -> None:
    """A page of events cut at its limit says where the next begins only when an event
    follows it (of the kind asked for, when one is): a last page exactly full says null."""
    with api.client(api.token(Scope.READ)) as reader, api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, agent, cli.plan(Reply.text("done")))
        wait_status(http, sid, "completed")
        path = f"/v1/sessions/{sid}/events"
        whole = reader.get(path, params={"limit": 500}).json()
        ids = [e["id"] for e in whole["items"]]
        assert len(ids) >= 2 and whole["next_after"] is None

        full = reader.get(path, params={"limit": len(ids)}).json()
        assert [e["id"] for e in full["items"]] == ids and full["next_after"] is None
        tail = reader.get(path, params={"after": ids[0], "limit": len(ids) - 1}).json()
        assert [e["id"] for e in tail["items"]] == ids[1:] and tail["next_after"] is None
        ended = reader.get(path, params={"kind": "session_ended", "limit": 1}).json()
        assert [e["kind"] for e in ended["items"]] == ["session_ended"]
        assert ended["next_after"] is None

        cut = reader.get(path, params={"limit": len(ids) - 1}).json()
        assert [e["id"] for e in cut["items"]] == ids[:-1] and cut["next_after"] == ids[-2]
        rest = reader.get(path, params={"after": cut["next_after"], "limit": len(ids) - 1}).json()
        assert [e["id"] for e in rest["items"]] == ids[-1:] and rest["next_after"] is None


def pad_events(api: ApiServer, sid: str, agent: str, first: int, count: int) -> None:
    """Record ``count`` more events in the session, keyed ``pad:first``, ``pad:first+1``..."""

    async def go() -> None:
        url = api.settings.endpoints().database_url
        assert url is not None
        engine = make_engine(url, pool_size=1)
        try:
            async with make_sessionmaker(engine).begin() as db:
                await db.execute(
                    text(
                        "INSERT INTO events (session_id, agent_id, key, kind, step) "
                        "SELECT :sid, :a, 'pad:' || n, 'note', 0 "
                        "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS n"
                    ),
                    {"sid": sid, "a": agent, "first": first, "last": first + count - 1},
                )
        finally:
            await engine.dispose()

    asyncio.run(go())


def test_events_at_the_largest_limit_say_whether_more_follow(
    cli: CLIStack, api: ApiServer, agent: str
) -> None:
    """At the largest ``limit`` (500) too: exactly 500 events left is the last page, 501
    is not."""
    with api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, agent, cli.plan(Reply.text("done")))
        wait_status(http, sid, "completed")
        path = f"/v1/sessions/{sid}/events"
        last = http.get(path, params={"limit": 500}).json()["items"][-1]["id"]

        pad_events(api, sid, agent, 1, 500)
        full = http.get(path, params={"after": last, "limit": 500}).json()
        assert len(full["items"]) == 500 and full["next_after"] is None
        pad_events(api, sid, agent, 501, 1)
        cut = http.get(path, params={"after": last, "limit": 500}).json()
        assert len(cut["items"]) == 500 and cut["next_after"] == cut["items"][-1]["id"]
        rest = http.get(path, params={"after": cut["next_after"], "limit": 500}).json()
        assert [e["key"] for e in rest["items"]] == ["pad:501"] and rest["next_after"] is None


def test_arguments_shaped_like_the_records_own_marks_read_back(
    cli: CLIStack, api: ApiServer, agent: str
) -> None:
    # A model's tool call (prompt injection is enough) whose arguments hold an object
    # shaped like the record's text mark: the events answered 500, the export ended after
    # its header, and the agent's live stream stopped for every reader.
    shaped = {"$vigil.text": {"$vigil.raw": "s"}}
    nested = {"$vigil.text": {"$vigil.raw": {"a": 1}}}
    goal = cli.plan(
        Reply.tool_call("write_artifact", {"name": "a.md", "content": shaped, "x": nested}),
        Reply.text("done"),
    )
    with api.client(api.token(Scope.CONTROL)) as http:
        sid = start(http, agent, goal, budget={"max_steps": 4})
        wait_status(http, sid, "completed")
        events = http.get(f"/v1/sessions/{sid}/events", params={"kind": "tool_call"})
        assert events.status_code == 200, events.text
        (call,) = events.json()["items"]
        assert call["payload"]["arguments"] == {"name": "a.md", "content": shaped, "x": nested}
        lines = http.get(f"/v1/sessions/{sid}/export").text.splitlines()
        kinds = [json.loads(line)["type"] for line in lines]
        assert kinds[0] == "session" and "message" in kinds and "event" in kinds
        md = http.get(f"/v1/sessions/{sid}/export", params={"format": "md"})
        assert md.status_code == 200 and "done" in md.text
