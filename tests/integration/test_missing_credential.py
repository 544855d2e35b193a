"""A model connection whose credential cannot be had fails the session at once (no retry)
with an error that names the credential, stored or from the environment."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from tests.support.llm_stub import LLMStub
from tests.support.sessions import events, running_worker, session_input, session_row, start
from vigil.activities.credentials import new_key_text
from vigil.schema.agents import AgentSpec
from vigil.workers.agents import AgentService
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        ("never-set-{tag}", "credential 'never-set-{tag}' is not set"),
        ("env:VIGIL_TEST_UNSET_{tag}", "environment variable VIGIL_TEST_UNSET_{tag} is not set"),
    ],
    ids=["stored", "environment"],
)
async def test_missing_credential_fails_clearly(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    credential: str,
    says: str,
) -> None:
    tag = uuid.uuid4().hex[:8]
    credential, says = credential.format(tag=tag), says.format(tag=tag)
    name = f"keyless-{tag}"
    cfg = settings.model_copy(
        update={
            "secret_key": SecretStr(new_key_text()),
            "model_connections": json.dumps(
                {
                    f"locked-{tag}": {
                        "kind": "openai",
                        "base_url": stub.url_openai,
                        "model": "m",
                        "credential": credential,
                    }
                }
            ),
        }
    )
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate({"name": name, "model": {"connection": f"locked-{tag}"}})
    )
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("try", agent_id=name))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert says in str(failed.value.cause)
    assert stub.requests == []  # the provider was never called
    row = await session_row(sessionmaker, handle.id)
    assert row.status == "failed" and says in (row.summary or "")
    (ended,) = await events(sessionmaker, handle.id, "session_ended")
    assert says in ended.payload["summary"]
    history = await handle.fetch_history()
    failures = [
        e.activity_task_failed_event_attributes
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert len(failures) == 1  # non-retryable: one attempt
    assert failures[0].failure.application_failure_info.type == "CredentialMissing"
