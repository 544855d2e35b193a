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


async def test_edited_arguments_no_schema_check_can_take_are_refused_not_a_stuck_session(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    """An approval signal (a raw Temporal client's) edited to an integer of 400 digits for
    a parameter with a float ``multipleOf``: JSON Schema's check raised OverflowError in
    the workflow, which failed its task, and every retry met the same signal: the session
    was stuck for good. One edited to NaN passed the schema, was taken, and the tool then
    refused the call as not the one approved: the session failed. Both are refused now,
    and the session goes on."""
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, ["pay"], modules=["tests.support.py_tools"]
    )
    stub.enqueue(
        Reply.tool_call("pay", {"amount": 1.5}), Reply.tool_call("finish", {"summary": "paid"})
    )
    cfg = worker_settings(settings, stub.url_openai, "tests.support.py_tools")
    async with running_worker(client, cfg, task_queue):
        arg = session_input("pay", agent_id=agent.name, policy=ToolPolicy(require_approval=["pay"]))
        handle = await start(client, task_queue, arg)
        await approval_pending(handle, sessionmaker, "a1-0")
        # As a raw client sends them: plain JSON (a model would write NaN as null).
        for n, amount in enumerate((10**400, float("nan")), start=1):
            edited = {"approval_id": "a1-0", "by": "eve", "edited_arguments": {"amount": amount}}
            await handle.signal(names.SIG_APPROVE, edited)
            await eventually(handle, lambda s, n=n: s.rejected_inputs == n)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            infinite = {"approval_id": "a1-0", "by": "ana", "edited_arguments": {"amount": 1e999}}
            await handle.execute_update(names.UPD_APPROVE, infinite, result_type=Ack)
        assert "Infinity" in str(refused.value.cause), refused.value.cause
        await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="cy"))
        result = await handle.result()
    assert result.status == SessionStatus.COMPLETED and result.summary == "paid"
    [call] = [e.payload for e in await events(sessionmaker, handle.id, "tool_call")]
    assert call["ok"] is True and call["output_preview"] == "paid 1.50"
    reasons = [e.reason or "" for e in await events(sessionmaker, handle.id, "input_rejected")]
    assert len(reasons) == 2
    assert "cannot be checked" in reasons[0] and "NaN" in reasons[1], reasons
