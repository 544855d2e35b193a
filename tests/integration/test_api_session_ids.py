"""Session ids over HTTP. An id names one session for good, across agents: a taken id is a
409 that tells a token not covering the session's agent only that the id is taken. An id
no route could reach (a slash, a dot segment, a space) is refused when the session starts,
through the API and `vigil start --id` alike, and an id longer than any session's is a
422 at once on every route that takes one, before Temporal or the record is asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define, wait_status
from tests.support.llm_stub import Reply
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
