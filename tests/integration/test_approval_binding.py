"""An approval is bound to the digest of the exact call: edited arguments that do not fit
the tool's schema are refused before the decision is accepted (the update by its
validator, the signal recorded as rejected input), and run_tool refuses to run any call
other than the approved one."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    events,
    eventually,
    running_worker,
    session_input,
    start,
    stub_settings,
    tool_messages,
    transcript,
)
from vigil.schema import names
from vigil.schema.agents import AgentSpec, call_digest
from vigil.schema.payloads import ApproveInput, SessionStatus
from vigil.workers.agents import AgentService
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def agent(sessionmaker: async_sessionmaker[DbSession]) -> AsyncIterator[str]:
    name = f"careful-{uuid.uuid4().hex[:8]}"
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "tools": [
                    {
                        "name": "http_fetch",
                        "approve_when": [{"argument": "url", "host_not_in": ["trusted.test"]}],
                    }
                ],
            }
        )
    )
    yield name


async def test_edited_arguments_must_fit_the_schema(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    agent: str,
) -> None:
    url = f"{stub.url}/draft"
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": url}), Reply.tool_call("finish", {"summary": "ok"})
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch a draft", agent_id=agent))
        state = await approval_pending(handle, sessionmaker)
        (pending,) = state.pending_approvals
        assert pending.digest == call_digest("http_fetch", {"url": url})

        for bad in ({"url": 42}, {"url": url, "method": "DELETE"}, {}):
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await handle.execute_update(
                    names.UPD_APPROVE,
                    ApproveInput(approval_id="a1-0", by="eve", edited_arguments=bad),
                )
            assert "do not fit http_fetch's schema" in str(refused.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="eve", digest="0" * 64)
            )
        assert "is for the call with digest" in str(refused.value.cause)
        # The same by signal: recorded as rejected input; the approval stays pending.
        await handle.signal(
            names.SIG_APPROVE,
            ApproveInput(approval_id="a1-0", by="eve", edited_arguments={"url": ["x"]}),
        )
        state = await eventually(handle, lambda s: s.rejected_inputs == 1)
        assert [p.approval_id for p in state.pending_approvals] == ["a1-0"]

        final_url = f"{stub.url}/final"
        await handle.execute_update(
            names.UPD_APPROVE,
            ApproveInput(
                approval_id="a1-0",
                by="ann",
                edited_arguments={"url": final_url},
                digest=pending.digest,
            ),
        )
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED, result
    rejected = await events(sessionmaker, handle.id, "rejected_input")
    assert len(rejected) == 1 and "do not fit http_fetch's schema" in (rejected[0].reason or "")
    (ran,) = await events(sessionmaker, handle.id, "tool_call")
    assert ran.payload["arguments"] == {"url": final_url} and ran.payload["edited"] is True
    assert "no route for GET /final" in ran.payload["output_preview"]


async def _tamper(
    sessionmaker: async_sessionmaker[DbSession], session_id: str, arguments: dict[str, Any]
) -> None:
    """Rewrite the recorded call's arguments behind the session's back (as the owner)."""
    async with sessionmaker.begin() as db:
        row = (
            await db.execute(
                text(
                    "SELECT seq, tool_calls FROM messages WHERE session_id = :s "
                    "AND role = 'assistant' ORDER BY seq DESC LIMIT 1"
                ),
                {"s": session_id},
            )
        ).one()
        calls = row.tool_calls if isinstance(row.tool_calls, list) else json.loads(row.tool_calls)
        calls[0]["arguments"] = json.dumps(arguments)
        await db.execute(text("SET LOCAL session_replication_role = replica"))
        await db.execute(
            text(
                "UPDATE messages SET tool_calls = CAST(:c AS jsonb) "
                "WHERE session_id = :s AND seq = :q"
            ),
            {"c": json.dumps(calls), "s": session_id, "q": row.seq},
        )


async def test_run_tool_refuses_a_call_other_than_the_approved_one(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    agent: str,
) -> None:
    stub.enqueue(Reply.tool_call("http_fetch", {"url": f"{stub.url}/harmless"}))
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle: WorkflowHandle[Any, Any] = await start(
            client, task_queue, session_input("fetch something", agent_id=agent)
        )
        state = await approval_pending(handle, sessionmaker)
        approved = state.pending_approvals[0].digest
        await _tamper(sessionmaker, handle.id, {"url": f"{stub.url}/evil"})
        await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ann", digest=approved)
        )
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert await events(sessionmaker, handle.id, "tool_call") == []  # nothing was run
    (mismatch,) = await events(sessionmaker, handle.id, "approval_mismatch")
    assert mismatch.payload["approved_digest"] == approved
    assert mismatch.payload["digest"] == call_digest("http_fetch", {"url": f"{stub.url}/evil"})
    (ended,) = await events(sessionmaker, handle.id, "session_ended")
    assert ended.payload["status"] == "failed"
    assert "is not the approved one" in ended.payload["summary"]
    (result,) = tool_messages(await transcript(sessionmaker, handle.id))
    assert result.content.startswith("error: not run")


async def test_rules_on_arguments_decide_who_waits(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    agent: str,
) -> None:
    """`approve_when host_not_in`: a fetch from a trusted host runs at once, one from any
    other host waits for a human (the rule is evaluated on the arguments in call_model)."""
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": "https://trusted.test/page"}),
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("look", agent_id=agent))
        await approval_pending(handle, sessionmaker, "a2-0")
        await handle.cancel()
    (requested,) = await events(sessionmaker, handle.id, "approval_requested")
    assert requested.step == 2
    assert requested.payload["digest"] == call_digest("http_fetch", {"url": f"{stub.url}/page"})
    (ran,) = await events(sessionmaker, handle.id, "tool_call")
    assert ran.step == 1 and ran.payload["arguments"] == {"url": "https://trusted.test/page"}


@pytest.mark.parametrize("mode", ["default", "local"])
async def test_a_rule_that_matches_asks_even_when_the_tool_says_never(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    mode: str,
) -> None:
    """`approval = "never"` beside `approve_when`: a call that meets a rule still waits
    (it ran at once, folded into the model call or not)."""
    name = f"never-{uuid.uuid4().hex[:8]}"
    spec: dict[str, Any] = {
        "name": name,
        "tools": [
            {
                "name": "http_fetch",
                "approval": "never",
                "approve_when": [{"argument": "url", "host_not_in": ["trusted.test"]}],
            }
        ],
    }
    if mode == "local":
        spec["model"] = {"execution": "local"}
    await AgentService(sessionmaker).apply_spec(AgentSpec.model_validate(spec))
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": "https://trusted.test/page"}),
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("look", agent_id=name))
        await approval_pending(handle, sessionmaker, "a2-0")
        await handle.cancel()
    (requested,) = await events(sessionmaker, handle.id, "approval_requested")
    assert requested.payload["digest"] == call_digest("http_fetch", {"url": f"{stub.url}/page"})
    (ran,) = await events(sessionmaker, handle.id, "tool_call")
    assert ran.step == 1 and ran.payload["arguments"] == {"url": "https://trusted.test/page"}
