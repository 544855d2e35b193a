"""Sessions against a misbehaving provider: transient faults are retried by Temporal and the
session completes; a bad request fails the session at once with the provider's words; a
malformed tool call goes back to the model as a tool error; Anthropic's protocol works too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from tests.support.history import activity_runs
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, start, stub_settings
from vigil.schema import names
from vigil.schema.payloads import SessionStatus, StartSessionInput, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

MODEL_TIMEOUT = 1.0
FINISH = Reply.tool_call("finish", {"summary": "recovered"})


class Script:
    """The stub's responder: plays ``replies`` in order and notes when each request came."""

    def __init__(self, *replies: Reply) -> None:
        self._replies = list(replies)
        self._lock = threading.Lock()
        self.times: list[float] = []

    def __call__(self, body: Any) -> Reply:
        with self._lock:
            self.times.append(time.monotonic())
            if not self._replies:
                return Reply.status(500, message="the script has no more replies")
            return self._replies.pop(0)


def _settings(settings: Settings, stub: LLMStub, provider: str = "openai") -> Settings:
    base = stub.url_openai if provider == "openai" else stub.url_anthropic
    return stub_settings(
        settings,
        base,
        provider=provider,
        model_timeout_seconds=MODEL_TIMEOUT,
        http_allow=stub.host_port,
    )


def _input(goal: str) -> StartSessionInput:
    return StartSessionInput(
        agent_id="agent-faults", goal=goal, policy=ToolPolicy(require_approval=[])
    )


@dataclass(frozen=True)
class Fault:
    reply: Reply
    failure: str
    """What the retried attempt's last failure says."""
    min_gap: float
    """Seconds between the failed request and its retry, at least."""


TRANSIENT = {
    "429-retry-after-1": Fault(Reply.status(429, retry_after=1), "429", 1.0),
    # Longer than the retry policy's first interval (1 s): the provider's wish wins.
    "429-retry-after-3": Fault(Reply.status(429, retry_after=3), "429", 3.0),
    "500": Fault(Reply.status(500), "500", 1.0),
    "garbage": Fault(Reply.garbage(), "malformed reply", 1.0),
    "never-answers": Fault(
        Reply.hang(MODEL_TIMEOUT * 4), f"no reply within {MODEL_TIMEOUT}s", MODEL_TIMEOUT
    ),
}


@pytest.mark.parametrize("fault", list(TRANSIENT.values()), ids=list(TRANSIENT))
async def test_transient_fault_is_retried_and_the_session_completes(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    fault: Fault,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    script = Script(fault.reply, FINISH)
    stub.default = script
    async with running_worker(client, _settings(settings, stub), task_queue):
        handle = await start(client, task_queue, _input("weather the fault"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    assert (result.steps, result.summary) == (1, "recovered")
    assert len(stub.requests) == 2
    assert script.times[1] - script.times[0] >= fault.min_gap - 0.05
    # Temporal retried the model activity: the second attempt is the one that completed.
    runs = await activity_runs(handle, names.ACT_CALL_MODEL)
    assert [r.attempt for r in runs] == [2]
    assert "transient failure" in runs[0].last_failure
    assert fault.failure in runs[0].last_failure
    # The worker's log says it in one line: a provider's failure that is retried is no
    # bug of the worker's (it logged a whole traceback for each attempt, 20 for a call).
    traced = [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert traced == [], [r.getMessage() for r in traced]
    said = [r.getMessage() for r in caplog.records if "retried" in r.getMessage()]
    assert len(said) == 1 and fault.failure in said[0], said


async def test_bad_request_fails_the_session_without_retry(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    message = "max_tokens: 999999 > 4096, the maximum allowed for this model"
    stub.default = Script(Reply.status(400, message=message), FINISH)
    async with running_worker(client, _settings(settings, stub), task_queue):
        handle = await start(client, task_queue, _input("ask too much"))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert message in str(failed.value.cause)
    assert len(stub.requests) == 1
    assert [r.attempt for r in await activity_runs(handle, names.ACT_CALL_MODEL)] == [1]
    async with sessionmaker() as db:
        status, summary, finished = (
            await db.execute(
                text("SELECT status, summary, finished_at IS NOT NULL FROM sessions WHERE id = :s"),
                {"s": handle.id},
            )
        ).one()
    assert (status, finished) == ("failed", True)
    assert message in summary and "400" in summary


async def test_malformed_tool_arguments_go_back_to_the_model(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.default = Script(Reply.tool_call_raw("http_fetch", '{"url": "http://127.0.0.1/'), FINISH)
    async with running_worker(client, _settings(settings, stub), task_queue):
        handle = await start(client, task_queue, _input("fetch carelessly"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    assert (result.steps, result.summary) == (2, "recovered")
    assert len(stub.requests) == 2
    # The model's next request ends with the tool error answering its malformed call.
    first_call = stub.requests[0]
    last = stub.requests[1].body["messages"][-1]
    assert last["role"] == "tool"
    assert last["tool_call_id"] == "call_stub1_0"
    assert last["content"].startswith("error: arguments are not valid JSON")
    assert first_call.body["messages"][-1]["role"] == "user"
    async with sessionmaker() as db:
        ok = (
            await db.execute(
                text(
                    "SELECT payload->>'ok' FROM events WHERE session_id = :s AND key = 'tool:1:0'"
                ),
                {"s": handle.id},
            )
        ).scalar_one()
    assert ok == "false"


async def test_anthropic_session_calls_a_tool_and_finishes(
    client: Client, settings: Settings, task_queue: str, stub: LLMStub
) -> None:
    stub.default = Script(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}, content="Let me look."),
        Reply.tool_call("finish", {"summary": "looked"}),
    )
    async with running_worker(client, _settings(settings, stub, "anthropic"), task_queue):
        handle = await start(client, task_queue, _input("look at the page"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED
    assert (result.steps, result.summary) == (2, "looked")
    first, second = stub.requests
    assert first.path == second.path == "/v1/messages"
    assert first.headers["anthropic-version"]
    assert {t["name"] for t in first.body["tools"]} >= {"http_fetch", "finish"}
    assert "system" in first.body and first.body["messages"][0]["role"] == "user"
    # The tool result travels as a tool_result block of a user turn after the tool_use turn.
    assistant, user = second.body["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"type": "text", "text": "Let me look."}
    use = assistant["content"][1]
    assert use["type"] == "tool_use" and use["input"] == {"url": f"{stub.url}/page"}
    assert user["role"] == "user"
    (block,) = user["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == use["id"] == "toolu_stub1_0"
    assert block["content"].startswith("HTTP 404")
