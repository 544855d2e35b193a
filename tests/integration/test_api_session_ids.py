"""Session ids over HTTP. An id names one session for good, across agents: a taken id is a
409 that tells a token not covering the session's agent only that the id is taken. An id
no route could reach (a slash, a dot segment, a space) is refused when the session starts,
through the API and `vigil start --id` alike, and an id longer than any session's is a
422 at once on every route that takes one, before Temporal or the record is asked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_status
from tests.support.cli import explain, one_error_line
from tests.support.llm_stub import Reply
from tests.support.sessions import forgotten_by_temporal
from vigil.activities.record import erasure
from vigil.schema import names
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.keyed import keyed_session_id
from vigil.workers.temporal import connect
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def test_a_taken_id_tells_another_agents_token_nothing_but_that(
    cli: CLIStack, api: ApiServer
) -> None:
    with api.client(api.token(Scope.ADMIN)) as admin:
        owner, other = define(admin, "owner"), define(admin, "other")
        started = admin.post(
            "/v1/sessions", json={"agent": owner, "goal": cli.plan(Reply.text("ok"))}
        )
        assert started.status_code == 201, started.text
        sid = started.json()["id"]
        wait_status(admin, sid, "completed")

    with api.client(api.token(Scope.CONTROL, agents=[other])) as theirs:
        assert theirs.get(f"/v1/sessions/{sid}").status_code == 404
        taken = theirs.post("/v1/sessions", json={"agent": other, "goal": "p", "id": sid})
        assert taken.status_code == 409, taken.text
        assert taken.json() == {
            "error": {
                "code": "conflict",
                "message": f"a session with id {sid!r} already exists; choose another id",
            }
        }

    with api.client(api.token(Scope.CONTROL, agents=[owner])) as mine:
        again = mine.post("/v1/sessions", json={"agent": owner, "goal": "p", "id": sid})
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "conflict"
        assert again.json()["error"]["message"] == (
            f"a session with id {sid!r} already exists (completed); choose another id"
        )


def test_a_start_sent_again_may_return_the_session_its_id_names(
    cli: CLIStack, api: ApiServer
) -> None:
    """A start sent again after its answer was lost got a 409 for the session it had made:
    with ``if_exists: return`` it gets that session (200, ``created`` false), when it is
    the same agent's with the same goal; anything else stays a 409."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        owner, other = define(admin, "again"), define(admin, "again-other")
    goal = cli.plan(Reply.text("ok"))
    sid = f"again-{uuid.uuid4().hex[:8]}"
    start = {"agent": owner, "goal": goal, "id": sid, "if_exists": "return"}
    with api.client(api.token(Scope.CONTROL, agents=[owner])) as mine:
        first = mine.post("/v1/sessions", json=start)
        assert first.status_code == 201, first.text
        assert first.json()["created"] is True
        again = mine.post("/v1/sessions", json=start)
        assert again.status_code == 200, again.text
        assert (again.json()["id"], again.json()["created"]) == (sid, False)
        assert again.json()["status"] in ("running", "completed")
        wait_status(mine, sid, "completed")
        ended = mine.post("/v1/sessions", json=start)
        assert (ended.status_code, ended.json()["status"]) == (200, "completed"), ended.text
        other_goal = mine.post("/v1/sessions", json={**start, "goal": "another goal"})
        assert other_goal.status_code == 409, other_goal.text
        assert "with another goal" in other_goal.json()["error"]["message"]
        plain = mine.post("/v1/sessions", json={**start, "if_exists": "fail"})
        assert plain.status_code == 409, plain.text
    with api.client(api.token(Scope.CONTROL, agents=[other])) as theirs:
        # Another agent's session: the id is taken, and nothing more is said.
        taken = theirs.post("/v1/sessions", json={**start, "agent": other})
        assert taken.status_code == 409, taken.text
        assert taken.json()["error"]["message"] == (
            f"a session with id {sid!r} already exists; choose another id"
        )


UNREACHABLE_IDS = ["a/b", "..", ".", "a b", "-lead", "semi;colon", "x" * 201, "naïve", "a\\b"]


def test_an_id_no_route_could_reach_is_refused_at_start(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "ids")
        for bad in UNREACHABLE_IDS:
            r = http.post("/v1/sessions", json={"agent": agent, "goal": "g", "id": bad})
            assert r.status_code == 422, (bad, r.text)
            error = r.json()["error"]
            assert error["code"] == "invalid_request"
            assert len(bad) > 200 or "letters, digits" in error["message"], error
        assert http.get("/v1/sessions", params={"agent": agent}).json()["items"] == []

        good = f"ok-{agent}.v1:run_2"
        r = http.post(
            "/v1/sessions", json={"agent": agent, "goal": cli.plan(Reply.text("ok")), "id": good}
        )
        assert r.status_code == 201, r.text
        assert wait_status(http, good, "completed")["session"]["id"] == good

    refused = cli.vigil("start", "g", "--agent", agent, "--id", "a/b")
    assert refused.returncode == 2, explain(refused)
    assert one_error_line(refused).startswith("error: bad session id 'a/b': ")


def test_an_id_of_the_form_vigil_gives_a_keys_or_a_schedules_sessions_is_refused(
    api: ApiServer,
) -> None:
    """Squatting one would send another agent's conversation (or a scheduled run) into the
    squatter's session: a keyed message joins whatever session runs under its id."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        owner, other = define(admin, "owner"), define(admin, "other")
    with api.client(api.token(Scope.CONTROL, agents=[other])) as theirs:
        for reserved in (
            keyed_session_id(owner, "customer-42"),
            f"{owner}-nightly-run-2026-12-04T09:00:00Z",
        ):
            r = theirs.post("/v1/sessions", json={"agent": other, "goal": "p", "id": reserved})
            assert r.status_code == 422, (reserved, r.text)
            assert "reserved" in r.json()["error"]["message"], r.text
        assert theirs.get("/v1/sessions", params={"agent": other}).json()["items"] == []


SESSION_ROUTES = [
    ("GET", ""),
    ("GET", "/transcript"),
    ("GET", "/events"),
    ("GET", "/export"),
    ("GET", "/artifacts"),
    ("POST", "/cancel"),
    ("POST", "/approve"),
    ("POST", "/reject"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("POST", "/message"),
    ("POST", "/redirect"),
    ("POST", "/wake"),
]


def test_an_id_longer_than_any_sessions_is_422_at_once_on_every_route(api: ApiServer) -> None:
    long = "s" * 8_000
    with api.client(api.token(Scope.ADMIN)) as http:
        for method, path in SESSION_ROUTES:
            r = http.request(method, f"/v1/sessions/{long}{path}", json={})
            assert r.status_code == 422, (path, r.status_code, r.text[:300])
            assert r.json()["error"]["code"] == "invalid_request", path
            assert "at most 256 characters" in r.json()["error"]["message"], path
        with http.stream("GET", f"/v1/sessions/{long}/stream") as stream:
            assert stream.status_code == 422
        # A session id as a filter: the deliveries' took 400 characters.
        filtered = http.get("/v1/webhooks/deliveries", params={"session": "s" * 257})
        assert filtered.status_code == 422, filtered.text
        # Ids vigil makes itself (a schedule's runs) are longer than the 200 a caller may
        # choose: those are still looked up.
        assert http.get(f"/v1/sessions/{'s' * 256}").status_code == 404


def test_an_id_erased_and_taken_again_belongs_to_its_new_agent(
    cli: CLIStack, api: ApiServer
) -> None:
    """The API remembered which agent each session it was asked about belongs to, for
    good: once the session was erased and its id taken by another agent's, the old
    agent's token still reached the new session's stream, and its export was a 500."""
    with api.client(api.token(Scope.ADMIN)) as admin:
        first, second = define(admin, "first"), define(admin, "second")
        started = admin.post(
            "/v1/sessions", json={"agent": first, "goal": cli.plan(Reply.text("one"))}
        )
        assert started.status_code == 201, started.text
        sid = started.json()["id"]
        wait_status(admin, sid, "completed")
        assert admin.get(f"/v1/sessions/{sid}").json()["session"]["agent_id"] == first
        ended = admin.get(f"/v1/sessions/{sid}/stream", params={"tokens": "false"})
        assert ended.status_code == 200 and "event: end" in ended.text, ended.text

    done = cli.vigil("erase", "--session", sid, "--yes")
    assert done.returncode == 0, explain(done)
    # Temporal deletes the erased runs in the background (the erasure waits 20 s at most):
    # the id is free once it has.
    asyncio.run(_temporal_forgets(cli, sid))

    with api.client(api.token(Scope.ADMIN)) as admin:
        again = admin.post(
            "/v1/sessions",
            json={"agent": second, "goal": cli.plan(Reply.text("two")), "id": sid},
        )
        assert again.status_code == 201, again.text
        wait_status(admin, sid, "completed")
        export = admin.get(f"/v1/sessions/{sid}/export", params={"format": "jsonl"})
        assert export.status_code == 200 and '"two"' in export.text, export.text
    with api.client(api.token(Scope.READ, agents=[first])) as old:
        for path in ("", "/transcript", "/export", "/stream"):
            assert old.get(f"/v1/sessions/{sid}{path}").status_code == 404, path
    with api.client(api.token(Scope.READ, agents=[second])) as new:
        assert "two" in new.get(f"/v1/sessions/{sid}/transcript").json()["items"][-1]["content"]
        stream = new.get(f"/v1/sessions/{sid}/stream", params={"tokens": "false"})
        assert stream.status_code == 200 and "two" in stream.text, stream.text


def test_an_erased_id_temporal_has_not_yet_deleted_says_so(cli: CLIStack, api: ApiServer) -> None:
    """Between the erasure's receipt and Temporal's deletion of the run (which the erasure
    waits 20 s for at most), a start under the id is refused with that reason, not as an
    id some session holds. The window is made here: a run Temporal holds under the id,
    and the erasure's receipt for it."""
    sid = f"erased-{uuid.uuid4().hex[:10]}"
    with api.client(api.token(Scope.ADMIN)) as admin:
        agent = define(admin, "after-erasure")

    async def hold_then_erase() -> None:
        client = await connect(cli.settings)
        await client.start_workflow(
            "vigil-test-placeholder",
            id=sid,
            task_queue=f"nobody-{uuid.uuid4().hex}",
            search_attributes=TypedSearchAttributes([SearchAttributePair(names.SA_AGENT, agent)]),
        )
        engine = make_engine(cli.database_url)
        try:
            async with make_sessionmaker(engine).begin() as db:
                await erasure.write_receipt(
                    db, kind="session", subject=sid, by="test", reason=None, counts={}
                )
        finally:
            await engine.dispose()

    asyncio.run(hold_then_erase())
    try:
        with api.client(api.token(Scope.ADMIN)) as admin:
            refused = admin.post("/v1/sessions", json={"agent": agent, "goal": "p", "id": sid})
            other = define(admin, "not-the-erased-one")
        assert refused.status_code == 409, refused.text
        message = refused.json()["error"]["message"]
        assert "was erased and Temporal is still deleting its history" in message, message
        # A token that does not cover the erased session's agent learns only that the id
        # is taken.
        with api.client(api.token(Scope.CONTROL, agents=[other])) as theirs:
            taken = theirs.post("/v1/sessions", json={"agent": other, "goal": "p", "id": sid})
        assert taken.status_code == 409, taken.text
        assert taken.json()["error"]["message"] == (
            f"a session with id {sid!r} already exists; choose another id"
        )
        cli_refused = cli.vigil("start", "p", "--agent", agent, "--id", sid)
        assert cli_refused.returncode != 0
        assert "was erased" in one_error_line(cli_refused), explain(cli_refused)
    finally:
        asyncio.run(_terminate(cli, sid))


def test_an_id_erased_long_before_the_run_that_holds_it_is_just_taken(
    cli: CLIStack, api: ApiServer
) -> None:
    """An id erased an hour ago, then taken again by a run that still holds it: a start
    under it is refused as taken, not as erased (the receipt is older than the run)."""
    sid = f"reused-{uuid.uuid4().hex[:10]}"

    async def erased_then_held() -> None:
        engine = make_engine(cli.database_url)
        try:
            async with make_sessionmaker(engine).begin() as db:
                receipt = await erasure.write_receipt(
                    db, kind="session", subject=sid, by="test", reason=None, counts={}
                )
                await db.execute(
                    text(
                        "UPDATE erasure_receipts SET erased_at = now() - interval '1 hour' "
                        "WHERE id = :id"
                    ),
                    {"id": receipt.id},
                )
        finally:
            await engine.dispose()
        client = await connect(cli.settings)
        await client.start_workflow(
            "vigil-test-placeholder", id=sid, task_queue=f"nobody-{uuid.uuid4().hex}"
        )

    asyncio.run(erased_then_held())
    try:
        with api.client(api.token(Scope.ADMIN)) as admin:
            agent = define(admin, "after-reuse")
            refused = admin.post("/v1/sessions", json={"agent": agent, "goal": "p", "id": sid})
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["message"] == (
            f"a session with id {sid!r} already exists; choose another id"
        )
    finally:
        asyncio.run(_terminate(cli, sid))


async def _terminate(cli: CLIStack, workflow_id: str) -> None:
    client = await connect(cli.settings)
    await client.get_workflow_handle(workflow_id).terminate(reason="test done")


async def _temporal_forgets(cli: CLIStack, session_id: str) -> None:
    await forgotten_by_temporal(await connect(cli.settings), session_id)
