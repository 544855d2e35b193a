"""Schedules over HTTP: create (admin) with cron or interval, list and show with goal,
agent, timing, paused and next runs; pause, resume, trigger (a run lands in /runs), delete
(its runs stay); scopes, agent filters, bad input and unknown ids."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from tests.support.cli import poll
from vigil.schema import names
from vigil.workers import inputs
from vigil.workers.client import NotFound, VigilClient
from vigil.workers.schedules import ScheduleService
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with running_api(cli.settings) as server:
        yield server


@pytest.fixture
def schedule_id(cli: CLIStack) -> Iterator[str]:
    sid = f"api-sched-{uuid.uuid4().hex[:8]}"
    yield sid

    async def delete() -> None:
        client = await VigilClient.connect(cli.settings)
        try:
            with contextlib.suppress(NotFound):
                await client.delete_schedule(sid)
            running = f"{names.SA_SCHEDULE.name} = '{sid}' AND ExecutionStatus = 'Running'"
            deadline = asyncio.get_running_loop().time() + 30
            while [wf async for wf in client.temporal.list_workflows(running)]:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    asyncio.run(delete())


def create(http: Any, **body: Any) -> Any:
    return http.post("/v1/schedules", json=body)


def recorded_runs(http: Any, schedule_id: str, count: int) -> list[dict[str, Any]]:
    """The schedule's runs, once the record holds ``count`` of them."""

    def found() -> list[dict[str, Any]] | None:
        runs: list[dict[str, Any]] = http.get(f"/v1/schedules/{schedule_id}/runs").json()["items"]
        return runs if len(runs) == count else None

    runs: list[dict[str, Any]] = poll(found, 60, f"{count} runs in the record")
    return runs


def test_schedule_lifecycle(api: ApiServer, schedule_id: str) -> None:
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    admin = api.token(Scope.ADMIN, owner="ops-lead")
    with api.client(admin) as http:
        made = create(
            http, id=schedule_id, agent=agent, goal="check the queue", every="1h",
            paused=True, overlap="buffer_one", max_steps=5,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["id"], body["agent_id"], body["goal"]) == (
            schedule_id,
            agent,
            "check the queue",
        )
        assert (body["every_seconds"], body["cron"], body["paused"]) == (3600.0, None, True)
        assert (body["overlap"], body["agent_version"]) == ("buffer_one", None)
        assert (body["running"], body["buffered"]) == ([], 0)

        again = create(http, id=schedule_id, agent=agent, goal="x", every="1h")
        assert (again.status_code, again.json()["error"]["code"]) == (409, "refused")

        def listed() -> dict[str, Any] | None:
            rows = http.get("/v1/schedules").json()["items"]
            return next((r for r in rows if r["id"] == schedule_id), None)

        row = poll(listed, 30, "the schedule is listed", every=0.5)
        assert (row["goal"], row["agent_id"], row["paused"]) == ("check the queue", agent, True)
        assert row["next_runs"] == [], "a paused schedule has no next runs"

    with api.client(api.token(Scope.CONTROL, owner="ana")) as http:
        assert http.post(f"/v1/schedules/{schedule_id}/resume").json() == {
            "id": schedule_id, "action": "resumed", "changed": True, "held": None, "run": None,
        }  # fmt: skip
        # Once more: it was not paused, and the answer says nothing changed.
        again = http.post(f"/v1/schedules/{schedule_id}/resume").json()
        assert again["changed"] is False, again
        shown = http.get(f"/v1/schedules/{schedule_id}").json()
        assert shown["paused"] is False and shown["next_runs"], shown
        assert http.post(f"/v1/schedules/{schedule_id}/pause").status_code == 200
        shown = http.get(f"/v1/schedules/{schedule_id}").json()
        assert shown["paused"] is True and shown["note"] == "paused by ana"
        assert shown["next_runs"] == [], shown

        assert http.post(f"/v1/schedules/{schedule_id}/trigger").status_code == 200
        runs = poll(
            lambda: http.get(f"/v1/schedules/{schedule_id}/runs").json()["items"],
            45,
            "a triggered run in the record",
        )
        assert runs[0]["schedule_id"] == schedule_id and runs[0]["agent_id"] == agent
        assert runs[0]["id"].startswith(f"{schedule_id}-run")

        assert http.delete(f"/v1/schedules/{schedule_id}").status_code == 403  # admin only

    with api.client(admin) as http:
        assert http.delete(f"/v1/schedules/{schedule_id}").json()["action"] == "deleted"
        assert http.get(f"/v1/schedules/{schedule_id}").status_code == 404
        after = http.get(f"/v1/schedules/{schedule_id}/runs")
        assert [r["id"] for r in after.json()["items"]] == [r["id"] for r in runs]


def test_cron_schedule_with_pinned_version_and_time_zone(api: ApiServer, schedule_id: str) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        made = create(
            http, id=schedule_id, agent=f"sched-{uuid.uuid4().hex[:6]}", goal="weekly report",
            cron="0 9 * * MON", time_zone="Europe/Paris", paused=True,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        assert (made.json()["cron"], made.json()["time_zone"]) == ("0 9 * * MON", "Europe/Paris")
        assert made.json()["every_seconds"] is None and made.json()["overlap"] == "skip"
        # No definition of this version exists: refused before anything is created.
        pinned = create(
            http, id=f"{schedule_id}-v", agent="never-defined", goal="x", every="1h",
            agent_version=3,
        )  # fmt: skip
        assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "unknown_agent"


def test_scopes_agents_bad_input_and_unknown_ids(api: ApiServer, schedule_id: str) -> None:
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    good = {"id": schedule_id, "agent": agent, "goal": "g", "every": "1h", "paused": True}
    with api.client(api.token(Scope.CONTROL)) as http:
        assert create(http, **good).status_code == 403
    with api.client(api.token(Scope.ADMIN, agents=["other"])) as http:
        assert create(http, **good).status_code == 403
    with api.client(api.token(Scope.ADMIN)) as http:
        for change in ({"every": None}, {"cron": "* * * * *"}, {"every": "soon"},
                       {"every": "0s"}, {"every": "-1h"}, {"every": "inf"}, {"jitter": "x"},
                       {"overlap": "sometimes"}, {"id": "has space"}, {"id": "a/b"},
                       {"goal": ""}, {"time_zone": "Nowhere/Land"}, {"max_steps": 0},
                       {"surprise": 1}, {"id": "vigil-retention"}):  # fmt: skip
            r = create(http, **{**good, **change})
            assert r.status_code == 422, (change, r.text)
            assert r.json()["error"]["code"] == "invalid_request"
        bad_cron = create(http, **{**good, "every": None, "cron": "61 * * * *"})
        assert bad_cron.status_code == 422, bad_cron.text
        assert create(http, **good).status_code == 201
        for path in ("", "/runs"):
            r = http.get(f"/v1/schedules/no-such-schedule{path}")
            assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_schedule")
        for op in ("pause", "resume", "trigger"):
            assert http.post(f"/v1/schedules/no-such-schedule/{op}").status_code == 404
        assert http.delete("/v1/schedules/no-such-schedule").status_code == 404
        assert http.get("/v1/schedules/bad%20id").status_code == 422
    with api.client(api.token(Scope.READ, agents=["other"])) as http:
        assert schedule_id not in [s["id"] for s in http.get("/v1/schedules").json()["items"]]
        assert http.get(f"/v1/schedules/{schedule_id}").status_code == 404
        # Another agent's schedule reads as one that does not exist, word for word (it
        # said "no goal schedule", an absent one "no schedule").
        theirs = http.get(f"/v1/schedules/{schedule_id}").json()["error"]["message"]
        absent = http.get("/v1/schedules/never-made").json()["error"]["message"]
        assert theirs.replace(schedule_id, "X") == absent.replace("never-made", "X")
        assert http.get(f"/v1/schedules/{schedule_id}/runs").status_code == 404
    with api.client(api.token(Scope.CONTROL, agents=["other"])) as http:
        assert http.post(f"/v1/schedules/{schedule_id}/trigger").status_code == 404
    with api.client(api.token(Scope.READ)) as http:
        assert http.post(f"/v1/schedules/{schedule_id}/pause").status_code == 403
        assert http.get(f"/v1/schedules/{schedule_id}").json()["paused"] is True
    with api.client() as http:
        assert http.get("/v1/schedules").status_code == 401


def test_runs_are_paged_by_cursor(api: ApiServer, schedule_id: str) -> None:
    """A schedule's runs came back as one list cut at ``limit``: a schedule of more runs
    than that could not be read past its newest. They page as ``/sessions`` does now:
    ``next_cursor`` continues with older runs, null on the last page."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    with api.client(api.token(Scope.ADMIN)) as http:
        made = create(
            http, id=schedule_id, agent=agent, goal="page me", every="1h", paused=True,
            overlap="allow_all",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        for _ in range(3):
            assert http.post(f"/v1/schedules/{schedule_id}/trigger").status_code == 200
        every = recorded_runs(http, schedule_id, 3)
        first = http.get(f"/v1/schedules/{schedule_id}/runs", params={"limit": 2}).json()
        assert [r["id"] for r in first["items"]] == [r["id"] for r in every[:2]]
        assert first["next_cursor"], first
        rest = http.get(
            f"/v1/schedules/{schedule_id}/runs",
            params={"limit": 2, "cursor": first["next_cursor"]},
        ).json()
        assert [r["id"] for r in rest["items"]] == [every[2]["id"]]
        assert rest["next_cursor"] is None
        bad = http.get(f"/v1/schedules/{schedule_id}/runs", params={"cursor": "nonsense"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")
        # As every list of sessions: 500 a page at most (1,000 was taken, and 500 sent).
        over = http.get(f"/v1/schedules/{schedule_id}/runs", params={"limit": 501})
        assert over.status_code == 422, over.text


def test_triggers_back_to_back_each_start_a_run_and_name_it(
    api: ApiServer, schedule_id: str
) -> None:
    """Temporal names a schedule's runs by the second: a trigger in the second of the one
    before it started nothing, and both answered "triggered". A trigger now answers once
    its run has started, naming it, and one sent in the second of the last run waits for
    the next second."""
    agent = f"sched-{uuid.uuid4().hex[:6]}"
    with api.client(api.token(Scope.ADMIN)) as http:
        made = create(
            http, id=schedule_id, agent=agent, goal="twice", every="1h", paused=True,
            overlap="allow_all",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        answers = [http.post(f"/v1/schedules/{schedule_id}/trigger").json() for _ in range(2)]
        started = [a["run"] for a in answers]
        assert all(r and r.startswith(f"{schedule_id}-run") for r in started), answers
        assert started[0] != started[1], answers
        runs = recorded_runs(http, schedule_id, 2)
        assert sorted(r["id"] for r in runs) == sorted(started)


def test_a_listing_for_some_agents_looks_past_the_first_schedules(cli: CLIStack) -> None:
    """The list took the first 200 schedule ids of every agent, then kept those the token
    sees: a token of an agent whose schedules sort after 200 others saw none."""
    early, late = (f"list-{n}-{uuid.uuid4().hex[:6]}" for n in ("a", "z"))
    ids = [f"0000-{uuid.uuid4().hex[:8]}" for _ in range(3)] + [f"zzzz-{uuid.uuid4().hex[:8]}"]

    async def go() -> list[str]:
        client = await VigilClient.connect(cli.settings)
        try:
            for sid in ids:
                agent = late if sid.startswith("zzzz") else early
                template = inputs.schedule_template(agent=agent, goal="g")
                await client.create_schedule(
                    sid, template, cron="0 3 * * *", paused=True, sees_agent=lambda _: True
                )
            try:
                service = ScheduleService(client)
                seen = await service.list(limit=2, sees_agent=lambda a: a == late)
                return [v.id for v in seen]
            finally:
                for sid in ids:
                    await client.delete_schedule(sid)
        finally:
            await client.close()

    assert asyncio.run(go()) == [ids[-1]]
