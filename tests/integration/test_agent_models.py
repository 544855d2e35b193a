"""Two agents with different model connections in one worker: each session reaches its own
LLM server (OpenAI protocol for one, Anthropic for the other) with its own model,
temperature, max tokens, rendered system prompt and tool catalog; a stored credential is
sent to the provider and appears nowhere else."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import events, running_worker, session_input, session_row, start
from vigil.activities.credentials import new_key_text
from vigil.schema.agents import AgentSpec
from vigil.schema.payloads import SessionStatus
from vigil.workers.agents import AgentService
from vigil.workers.credentials import CredentialService
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def second_stub() -> Iterator[LLMStub]:
    with LLMStub() as s:
        yield s


def models_settings(settings: Settings, connections: dict[str, object]) -> Settings:
    return settings.model_copy(
        update={
            "model_connections": json.dumps(connections),
            "secret_key": SecretStr(new_key_text()),
            "http_allow": "127.0.0.1",
        }
    )


async def test_two_agents_two_models_one_worker(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    second_stub: LLMStub,
) -> None:
    tag = uuid.uuid4().hex[:8]
    alpha, beta = f"alpha-{tag}", f"beta-{tag}"
    secret = f"sk-beta-{uuid.uuid4().hex}"
    cfg = models_settings(
        settings,
        {
            f"oa-{tag}": {"kind": "openai", "base_url": stub.url_openai, "model": "alpha-1"},
            f"an-{tag}": {
                "kind": "anthropic",
                "base_url": second_stub.url_anthropic,
                "model": "beta-1",
                "credential": f"beta-key-{tag}",
            },
        },
    )
    await CredentialService(cfg, sessionmaker).set(f"beta-key-{tag}", secret)
    agents = AgentService(sessionmaker)
    await agents.apply_spec(
        AgentSpec.model_validate(
            {
                "name": alpha,
                "system_prompt": "You are {agent}, {style}. Goal: {goal}",
                "variables": {"style": "terse"},
                "model": {"connection": f"oa-{tag}", "temperature": 0.3, "max_tokens": 222},
                "tools": [{"name": "read_artifact"}],
            }
        )
    )
    await agents.apply_spec(
        AgentSpec.model_validate(
            {
                "name": beta,
                "model": {"connection": f"an-{tag}", "model": "beta-2"},
                "tools": [{"name": "write_artifact"}, {"name": "recall"}],
            }
        )
    )
    stub.enqueue(Reply.tool_call("finish", {"summary": "alpha done"}))
    second_stub.enqueue(Reply.text("beta done"))

    async with running_worker(client, cfg, task_queue):
        a = await start(client, task_queue, session_input("count the stars", agent_id=alpha))
        b = await start(client, task_queue, session_input("name the stars", agent_id=beta))
        ra, rb = await a.result(), await b.result()
    assert ra.status == rb.status == SessionStatus.COMPLETED, (ra, rb)
    assert (ra.summary, rb.summary) == ("alpha done", "beta done")

    (req_a,) = stub.requests
    assert req_a.path == "/v1/chat/completions"
    assert req_a.body["model"] == "alpha-1"
    assert req_a.body["temperature"] == 0.3 and req_a.body["max_tokens"] == 222
    assert [t["function"]["name"] for t in req_a.body["tools"]] == ["read_artifact", "finish"]
    system = req_a.body["messages"][0]
    assert system == {
        "role": "system",
        "content": f"You are {alpha}, terse. Goal: count the stars",
    }
    assert "authorization" not in req_a.headers

    (req_b,) = second_stub.requests
    assert req_b.path == "/v1/messages"
    assert req_b.body["model"] == "beta-2" and "temperature" not in req_b.body
    assert [t["name"] for t in req_b.body["tools"]] == ["write_artifact", "recall", "finish"]
    assert req_b.headers["x-api-key"] == secret

    for handle, connection in ((a, f"oa-{tag}"), (b, f"an-{tag}")):
        row = await session_row(sessionmaker, handle.id)
        assert row.agent_id in (alpha, beta)
        (model_call,) = await events(sessionmaker, handle.id, "model_call")
        assert model_call.payload["connection"] == connection
        # The credential is nowhere in the history or the record.
        history = await handle.fetch_history()
        assert secret not in history.to_json()
    async with sessionmaker() as db:
        leaked = await db.execute(
            text(
                "SELECT count(*) FROM events WHERE payload::text LIKE :s "
                "UNION ALL SELECT count(*) FROM messages WHERE content LIKE :s "
                "UNION ALL SELECT count(*) FROM sessions WHERE metadata::text LIKE :s"
            ),
            {"s": f"%{secret}%"},
        )
        assert [n for (n,) in leaked] == [0, 0, 0]
    async with sessionmaker() as db:
        versions = await db.execute(
            text("SELECT agent_version FROM sessions WHERE id IN (:a, :b)"),
            {"a": a.id, "b": b.id},
        )
        assert [v for (v,) in versions] == [1, 1]


async def test_fallback_connection_when_the_first_keeps_failing(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    second_stub: LLMStub,
) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"sturdy-{tag}"
    cfg = models_settings(
        settings,
        {
            f"flaky-{tag}": {"kind": "openai", "base_url": stub.url_openai, "model": "f-1"},
            f"steady-{tag}": {"kind": "openai", "base_url": second_stub.url_openai, "model": "s-1"},
        },
    )
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"connection": f"flaky-{tag}", "fallback": f"steady-{tag}"},
            }
        )
    )
    stub.default = lambda _body: Reply.status(503, message="overloaded")
    second_stub.enqueue(Reply.tool_call("finish", {"summary": "answered by the fallback"}))
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("persist", agent_id=name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    assert result.summary == "answered by the fallback"
    assert len(stub.requests) == 2  # two attempts on the first connection, then the fallback
    assert [r.body["model"] for r in second_stub.requests] == ["s-1"]
    (model_call,) = await events(sessionmaker, handle.id, "model_call")
    assert model_call.payload["connection"] == f"steady-{tag}"


async def test_a_fallback_this_worker_lacks_leaves_the_call_on_the_first_connection(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once the first connection has failed twice the call moves to the fallback; a
    worker that has no such fallback waited for one that has it, without end, while the
    first connection would have answered. It now stays on the first connection (its
    failures still counted) and says so in its log."""
    tag = uuid.uuid4().hex[:8]
    name = f"unbacked-{tag}"
    cfg = models_settings(
        settings,
        {f"wobbly-{tag}": {"kind": "openai", "base_url": stub.url_openai, "model": "w-1"}},
    )
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"connection": f"wobbly-{tag}", "fallback": f"absent-{tag}"},
            }
        )
    )
    stub.enqueue(Reply.status(503, message="overloaded"))
    stub.enqueue(Reply.status(503, message="overloaded"))
    stub.enqueue(Reply.tool_call("finish", {"summary": "answered by the first"}))
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("persist", agent_id=name))
        result = await asyncio.wait_for(handle.result(), timeout=90)
    assert result.status == SessionStatus.COMPLETED, result
    assert result.summary == "answered by the first"
    assert [r.body["model"] for r in stub.requests] == ["w-1", "w-1", "w-1"]
    (model_call,) = await events(sessionmaker, handle.id, "model_call")
    assert model_call.payload["connection"] == f"wobbly-{tag}"
    said = [r.getMessage() for r in caplog.records if f"absent-{tag}" in r.getMessage()]
    assert said and "not configured on this worker" in said[0], said
