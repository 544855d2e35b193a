"""A worker that cannot serve a session's model connection (its credential cannot be had,
or the worker has no such connection) does not end the session: the call fails with a
short line that names what is missing, is retried like an outage (never counted against
the call's budget), and goes on once the credential is there or a worker that has the
connection takes it. The provider is never called meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client
from temporalio.runtime import Runtime, TelemetryConfig

from tests.support.cli import Vigil, cli_env
from tests.support.llm_stub import LLMStub
from tests.support.outage import pending_failure
from tests.support.sessions import (
    events,
    running_worker,
    session_input,
    session_row,
    start,
    until,
)
from vigil.activities.credentials import SecretBox, new_key_text, parse_key
from vigil.activities.record import credentials as stored
from vigil.schema.agents import AgentSpec
from vigil.schema.payloads import SessionResult, SessionStatus
from vigil.workers.agents import AgentService
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration


def _connection(stub: LLMStub, **extra: str) -> dict[str, str]:
    return {"kind": "openai", "base_url": stub.url_openai, "model": "m", **extra}


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        ("never-set-{tag}", "credential 'never-set-{tag}' is not set"),
        ("env:VIGIL_TEST_UNSET_{tag}", "environment variable VIGIL_TEST_UNSET_{tag} is not set"),
    ],
    ids=["stored", "environment"],
)
async def test_a_missing_credential_is_waited_for_and_the_session_goes_on(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    credential: str,
    says: str,
) -> None:
    tag = uuid.uuid4().hex[:8]
    credential, says = credential.format(tag=tag), says.format(tag=tag)
    name = f"keyless-{tag}"
    key = new_key_text()
    cfg = settings.model_copy(
        update={
            "secret_key": SecretStr(key),
            "model_connections": json.dumps(
                {f"locked-{tag}": _connection(stub, credential=credential)}
            ),
        }
    )
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate({"name": name, "model": {"connection": f"locked-{tag}"}})
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("try", agent_id=name))
        shown = await until(
            lambda: pending_failure(handle, says), within=60, what="the call waiting"
        )
        assert stub.requests == []  # the provider was never called
        row = await session_row(sessionmaker, handle.id)
        assert row.status == "running"
        # The credential arrives: the next attempt takes it.
        if credential.startswith("env:"):
            monkeypatch.setenv(credential.removeprefix("env:"), "sk-test")
        else:
            async with sessionmaker.begin() as db:
                await stored.put(db, SecretBox(parse_key(key)).seal(credential, "sk-test"))
        result: SessionResult = await handle.result()

    assert shown.startswith("waiting for a worker set up for this call: ") and says in shown, shown
    assert len(shown) < 300
    assert result.status == SessionStatus.COMPLETED
    assert stub.requests  # called once it could be
    # Each failed attempt is one line of vigil's, not a traceback of the SDK's.
    traced = [r.getMessage() for r in caplog.records if r.exc_info]
    assert traced == [], traced
    waited = [r.getMessage() for r in caplog.records if says in r.getMessage()]
    assert waited and all("retries in" in line for line in waited), waited
    (recovered,) = await events(sessionmaker, handle.id, "infrastructure_recovered")
    assert recovered.payload["part"] == "a worker set up for this call"
    assert says in recovered.payload["last_error"]


async def test_a_connection_this_worker_lacks_waits_for_a_worker_that_has_it(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    database_url: str,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:8]
    name, connection = f"elsewhere-{tag}", f"later-{tag}"
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate({"name": name, "model": {"connection": connection}})
    )
    async with running_worker(client, settings, task_queue):
        handle = await start(client, task_queue, session_input("go on", agent_id=name))
        shown = await until(
            lambda: pending_failure(handle, "not configured on this worker"),
            within=60,
            what="the call waiting for a worker with the connection",
        )
        assert stub.requests == []
        # `vigil show` and the API's session page say why the session does not move.
        view = await retrying_shown(settings, handle.id)
        # From the CLI: one with the stack's state folder (its payload keys), and one
        # without any keys, which cannot read the live state but shows the rest.
        shown_by_cli, keyless = await asyncio.gather(
            *(
                asyncio.to_thread(_show_json, handle.id, database_url, state, task_queue, tmp_path)
                for state in (settings.resolved_state_dir, tmp_path / "keyless")
            )
        )
    # This worker stops; one that has the connection takes the call.
    served = settings.model_copy(
        update={"model_connections": json.dumps({connection: _connection(stub)})}
    )
    async with running_worker(client, served, task_queue):
        result: SessionResult = await handle.result()

    assert f"model connection {connection!r} is not configured on this worker" in shown
    (line,) = view
    assert line.startswith("vigil.call_model attempt ") and line.endswith(shown), line
    (said,) = shown_by_cli["retrying"]
    assert said.startswith("vigil.call_model attempt ") and said.endswith(shown), said
    assert shown_by_cli["state"]["status"] == "running"
    # The keyless client reads the same retry; the attempt may have moved on between the two.
    (keyless_said,) = keyless["retrying"]
    assert keyless["state"] is None, keyless
    assert keyless_said.startswith("vigil.call_model attempt ") and keyless_said.endswith(shown)
    unreadable = keyless["state_unavailable"]
    assert "this client cannot read the answer" in unreadable, unreadable
    assert "payload is encrypted and this process has no payload keys" in unreadable, unreadable
    assert result.status == SessionStatus.COMPLETED
    row = await session_row(sessionmaker, handle.id)
    assert row.status == "completed"
    assert stub.requests


async def retrying_shown(settings: Settings, session_id: str) -> list[str]:
    """The calls `vigil show` and the API's session page say Temporal retries, once there
    are some."""
    vigil = await VigilClient.connect(settings)

    async def retrying() -> list[str]:
        return (await vigil.session_view(session_id)).retrying

    try:
        return await until(retrying, within=30, what="show's retrying line")
    finally:
        await vigil.close()


def _show_json(
    session_id: str, database_url: str, state: Path, task_queue: str, tmp_path: Path
) -> Any:
    """`vigil show SESSION --json` from a CLI whose state folder is ``state``."""
    env = cli_env(
        database_url=database_url,
        state_dir=state,
        task_queue=task_queue,
        model_url="http://127.0.0.1:9/v1",
        artifact_dir=tmp_path / "artifacts",
    )
    return json.loads(Vigil(env).ok("show", session_id, "--json", timeout=120).stdout)


async def test_a_scripted_connection_whose_script_is_missing_waits_for_it(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    tmp_path: Path,
) -> None:
    """A scripted connection names its script by a file: until the file is there, the
    call waits as for a worker set up for it (it failed with a traceback and counted)."""
    tag = uuid.uuid4().hex[:8]
    script = tmp_path / "script.json"
    name, connection = f"scripted-{tag}", f"play-{tag}"
    cfg = settings.model_copy(
        update={
            "model_connections": json.dumps(
                {connection: {"kind": "scripted", "base_url": script.as_uri(), "model": "s"}}
            )
        }
    )
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate({"name": name, "model": {"connection": connection}})
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("play", agent_id=name))
        shown = await until(
            lambda: pending_failure(handle, "cannot be read"), within=60, what="the call waiting"
        )
        script.write_text(json.dumps([{"say": "played"}]))
        result: SessionResult = await handle.result()
    assert shown.startswith("waiting for a worker set up for this call: "), shown
    assert f"its script {script.as_uri()} cannot be read" in shown, shown
    assert result.status == SessionStatus.COMPLETED


async def test_a_low_latency_call_moves_to_a_worker_that_has_the_connection(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
) -> None:
    """A local activity runs where its workflow task runs, and retries there: a
    low-latency session on a worker without its connection was held by that worker for
    good, its call in no list of pending activities, whatever other worker polled the
    queue. The call now moves to a regular activity, which any worker of the queue may
    take (which one takes each retry is the server's choice), and says why it waits."""
    tag = uuid.uuid4().hex[:8]
    name, connection = f"near-{tag}", f"far-{tag}"
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {"name": name, "model": {"connection": connection, "execution": "local"}}
        )
    )
    served = settings.model_copy(
        update={"model_connections": json.dumps({connection: _connection(stub)})}
    )
    async with contextlib.AsyncExitStack() as served_worker:
        async with running_worker(client, settings, task_queue):
            handle = await start(client, task_queue, session_input("move on", agent_id=name))
            shown = await until(
                lambda: pending_failure(handle, "not configured on this worker"),
                within=60,
                what="the call waiting as a regular activity",
            )
            assert stub.requests == []
            view = await retrying_shown(settings, handle.id)
            # A worker with the connection joins the queue (with a client of its own, as
            # a process would have).
            other = await connect(settings, runtime=Runtime(telemetry=TelemetryConfig()))
            await served_worker.enter_async_context(running_worker(other, served, task_queue))
        # The worker without it stops: the one with it takes the call, if it has not yet.
        result: SessionResult = await asyncio.wait_for(handle.result(), timeout=120)
    assert shown.startswith("waiting for a worker set up for this call: "), shown
    (line,) = view
    assert line.startswith("vigil.call_model attempt ") and line.endswith(shown), line
    assert result.status == SessionStatus.COMPLETED, result
    assert stub.requests
    (model_call,) = await events(sessionmaker, handle.id, "model_call")
    assert model_call.payload["connection"] == connection
