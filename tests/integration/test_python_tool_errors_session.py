"""A Python tool's failures go back to the model, never end the session: arguments that
do not fit the tool's schema, and an exception raised by the tool on the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError

from tests.support.agent_tools import apply_agent, worker_settings
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    events,
    eventually,
    running_worker,
    session_input,
    start,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, ApproveInput, SessionStatus, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_bad_arguments_and_an_exception_go_back_to_the_model(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    agent = await apply_agent(
        settings,
        sessionmaker,
        tmp_path,
        ["word_count", "explode"],
        modules=["tests.support.py_tools"],
    )
    stub.enqueue(
        Reply.tool_calls(
            ("word_count", {"text": 5}),
            ("explode", {"message": "disk on fire"}),
        ),
        Reply.tool_call("word_count", {"text": "fixed it"}),
        Reply.tool_call("finish", {"summary": "recovered"}),
    )
    cfg = worker_settings(settings, stub.url_openai, "tests.support.py_tools")
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("count", agent_id=agent.name))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED and result.summary == "recovered"

    calls = [e.payload for e in await events(sessionmaker, handle.id, "tool_call")]
    outputs = [(c["tool"], c["ok"], c["output_preview"]) for c in calls]
    assert outputs == [
        (
            "word_count",
            False,
            "error: invalid arguments for word_count at text: 5 is not of type 'string'",
        ),
        ("explode", False, "error: tool explode failed: RuntimeError: disk on fire"),
        ("word_count", True, '{"words": 2, "lines": 1}'),
    ]
    # The model read both errors before it tried again.
    second = str(stub.requests[1].body["messages"])
    assert "5 is not of type 'string'" in second and "RuntimeError: disk on fire" in second


async def test_an_integer_no_float_holds_is_refused_before_the_tool(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    """JSON Schema counts ``1e30`` as an integer: an approval edited to it was taken (the
    schema check passed), then the tool could not parse it and the session failed. Such a
    number is now refused where arguments are checked: the edit (update or signal) before
    it is taken, the model's call before the tool runs."""
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, ["word_count"], modules=["tests.support.py_tools"]
    )
    stub.enqueue(
        Reply.tool_call("word_count", {"text": "a b", "min_length": 1e30}),
        Reply.tool_call("word_count", {"text": "a b c", "min_length": 1}),
        Reply.tool_call("finish", {"summary": "counted"}),
    )
    cfg = worker_settings(settings, stub.url_openai, "tests.support.py_tools")
    policy = ToolPolicy(require_approval=["word_count"])
    edited = {"text": "a b", "min_length": 1e30}
    async with running_worker(client, cfg, task_queue):
        arg = session_input("count", agent_id=agent.name, policy=policy)
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker, "a2-0")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                names.UPD_APPROVE,
                ApproveInput(approval_id="a2-0", by="ana", edited_arguments=edited),
                result_type=Ack,
            )
        assert "is not of type 'integer'" in str(refused.value.cause)
        await handle.signal(
            names.SIG_APPROVE, ApproveInput(approval_id="a2-0", by="bob", edited_arguments=edited)
        )
        await eventually(handle, lambda s: s.rejected_inputs == 1)
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a2-0", by="cy"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED and result.summary == "counted"
    calls = [e.payload for e in await events(sessionmaker, handle.id, "tool_call")]
    assert calls[0]["output_preview"] == (
        "error: invalid arguments for word_count at min_length: 1e+30 is not of type 'integer'"
    )
    assert calls[1]["ok"] is True and calls[1]["arguments"]["min_length"] == 1
    [rejected] = await events(sessionmaker, handle.id, "input_rejected")
    assert "min_length" in (rejected.reason or "")
