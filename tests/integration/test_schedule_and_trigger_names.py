"""Names that could not work downstream are refused where they are given, on every face.

- A schedule id of 176 to 200 characters was taken, but each run's session id is the id
  and ``-run-`` and the run's time (25 more characters), past the record's 200: every run
  failed to write its record and retried for ever, and never appeared anywhere.
- An agent id holding NUL was taken for a schedule (with undefined agents allowed), whose
  every run then retried resolving its agent for ever; a start with one was a 500.
- ``client.create_schedule`` skipped the checks the CLI and the API make: a six-field cron
  (read by Temporal with a year as its sixth field: a monthly run for a daily one), a NUL
  in the goal, an unknown time zone were taken.
- A trigger name holding NUL (``POST /v1/triggers/a%00b``, no token needed) reached
  PostgreSQL and was a 500 with a traceback in the log each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from vigil.schema.payloads import StartSessionInput
from vigil.workers.client import BadArgument, NotFound, VigilClient
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration

LONGEST = 175
"""The longest schedule id whose runs' session ids fit the record's 200 characters."""


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with running_api(cli.settings) as server:
        yield server


@pytest.fixture
async def client(cli: CLIStack) -> AsyncIterator[VigilClient]:
    connected = await VigilClient.connect(cli.settings)
    try:
        yield connected
    finally:
        await connected.close()


def _id(length: int) -> str:
    head = f"long-{uuid.uuid4().hex[:8]}-"
    return head + "x" * (length - len(head))


def _delete(cli: CLIStack, schedule_id: str) -> None:
    async def go() -> None:
        connected = await VigilClient.connect(cli.settings)
        try:
            with contextlib.suppress(NotFound):
                await connected.delete_schedule(schedule_id)
        finally:
            await connected.close()

    asyncio.run(go())


def test_a_schedule_id_too_long_for_its_runs_is_refused_on_every_face(
    cli: CLIStack, api: ApiServer
) -> None:
    agent = f"names-{uuid.uuid4().hex[:6]}"
    too_long, longest = _id(LONGEST + 1), _id(LONGEST)
    body = {"agent": agent, "goal": "g", "every": "1h", "paused": True}
    with api.client(api.token(Scope.ADMIN)) as http:
        refused = http.post("/v1/schedules", json={**body, "id": too_long})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid_request"
        made = http.post("/v1/schedules", json={**body, "id": longest})
        assert made.status_code == 201, made.text
    try:
        cli_refused = cli.vigil(
            "schedule", "create", too_long, "--agent", agent, "--goal", "g", "--every", "1h"
        )
        assert cli_refused.returncode == 2, cli_refused.stderr
        assert f"1 to {LONGEST}" in cli_refused.stderr, cli_refused.stderr
    finally:
        _delete(cli, longest)


async def test_the_client_checks_a_schedule_as_the_cli_and_the_api_do(
    client: VigilClient,
) -> None:
    agent = f"names-{uuid.uuid4().hex[:6]}"
    good = StartSessionInput(agent_id=agent, goal="g")
    refused = {
        "an id too long": dict(schedule_id=_id(LONGEST + 1), template=good, cron="0 2 * * *"),
        "a six-field cron": dict(schedule_id=_id(20), template=good, cron="0 0 2 * * *"),
        "a cron that never fires": dict(schedule_id=_id(20), template=good, cron="0 0 31 2 *"),
        "an unknown time zone": dict(
            schedule_id=_id(20), template=good, cron="0 2 * * *", time_zone="Nowhere/Land"
        ),
        "a NUL in the goal": dict(
            schedule_id=_id(20),
            template=good.model_copy(update={"goal": "a\x00b"}),
            every=timedelta(hours=1),
        ),
        "a NUL in the agent": dict(
            schedule_id=_id(20),
            template=good.model_copy(update={"agent_id": "a\x00b"}),
            every=timedelta(hours=1),
        ),
        "an interval of nothing": dict(
            schedule_id=_id(20), template=good, every=timedelta(seconds=0)
        ),
        "a NUL in the note": dict(
            schedule_id=_id(20), template=good, every=timedelta(hours=1), note="a\x00b"
        ),
    }
    for what, kwargs in refused.items():
        with pytest.raises(BadArgument) as info:
            await client.create_schedule(**kwargs)  # type: ignore[arg-type]
        assert info.value.exit_code == 2, what
    listed = {s["id"] for s in await client.list_schedules()}
    assert not any(str(k["schedule_id"]) in listed for k in refused.values())


def test_an_agent_id_holding_nul_is_refused_not_a_500(api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        started = http.post("/v1/sessions", json={"agent": "a\x00b", "goal": "g"})
        assert started.status_code == 422, started.text
        assert "NUL" in started.json()["error"]["message"], started.text
        scheduled = http.post(
            "/v1/schedules",
            json={"id": _id(20), "agent": "a\x00b", "goal": "g", "every": "1h", "paused": True},
        )
        assert scheduled.status_code == 422, scheduled.text
        assert "NUL" in scheduled.json()["error"]["message"], scheduled.text


def test_a_trigger_name_holding_nul_is_unknown_not_a_500(api: ApiServer) -> None:
    """Answered as every name no trigger has is (a 401, as a bad signature: trying names
    tells none of them)."""
    with api.client() as anyone:
        unknown = anyone.post("/v1/triggers/no-such-trigger", json={"x": 1})
        assert unknown.status_code == 401, unknown.text
        for name in ("a%00b", "%00"):
            fired = anyone.post(f"/v1/triggers/{name}", json={"x": 1})
            assert (fired.status_code, fired.json()) == (401, unknown.json()), fired.text


async def test_the_trigger_service_takes_no_name_no_trigger_can_have(cli: CLIStack) -> None:
    from vigil.workers.db import make_engine, make_sessionmaker
    from vigil.workers.hooks import TriggerService

    engine = make_engine(cli.settings.endpoints().database_url or "", pool_size=1)
    try:
        service = TriggerService(cli.settings, make_sessionmaker(engine))
        for call in (service.get, service.delete, service.rotate_secret):
            with pytest.raises(NotFound, match="no trigger named"):
                await call("a\x00b")
    finally:
        await engine.dispose()
