"""A keyed message whose session has ended in Temporal (its record may still say it runs,
for a moment): the update-with-start is refused as a duplicate start, and the message
goes to the key's next session. The refusal was also left unretrieved on the start's
operation, so asyncio logged "Future exception was never retrieved" with a traceback on
the API's log for every such message."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import running_worker, session_input, stub_settings
from vigil.schema import names
from vigil.schema.payloads import MessageInput
from vigil.workers import keyed
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_message_to_an_ended_keyed_session_leaves_nothing_unretrieved(
    client: Client, settings: Settings, task_queue: str
) -> None:
    session_id = f"keyed-ended-{uuid.uuid4().hex[:8]}"
    arg = session_input("a conversation", conversation=True)
    ended = await client.start_workflow(
        names.WORKFLOW_SESSION, arg, id=session_id, task_queue=task_queue
    )
    await ended.terminate("ended before the message")  # closed: never started again
    loop = asyncio.get_running_loop()
    told: list[dict[str, Any]] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: told.append(context))
    vigil = await VigilClient.connect(settings)
    try:
        operation: WithStartWorkflowOperation[Any, Any] | None = WithStartWorkflowOperation(
            names.WORKFLOW_SESSION,
            arg,
            id=session_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        assert operation is not None
        sent = await keyed._send(vigil, session_id, MessageInput(text="hi", by="t"), operation)
        assert sent is None  # ended: the key's next session takes the message
        operation = None
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(before)
        await vigil.close()
    assert [c.get("message") for c in told] == []


async def test_a_message_whose_session_failed_before_answering_gets_no_answer(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    vigil_client: VigilClient,
) -> None:
    """The model call that would answer a keyed message fails for good (a 400): the reply
    the session's end writes where none came ("[no reply recorded: the session ended
    (failed) first]") was taken as the answer, which `vigil message --wait` printed, exiting
    0. There is no answer: the command says how the session ended."""
    stub.enqueue(Reply.text("hello"), Reply.status(400, message="bad request"))
    agent = f"keyed-{uuid.uuid4().hex[:6]}"
    sender = VigilClient(
        settings.model_copy(update={"task_queue": task_queue}), vigil_client.temporal
    )
    try:
        async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
            first = await keyed.message_by_key(
                sender, agent, "k1", "hi", by="ana", allow_undefined=True
            )
            assert await keyed.answer(sender, first, "hi", by="ana") is not None
            sent = await keyed.message_by_key(
                sender, agent, "k1", "are you there?", by="ana", allow_undefined=True
            )
            got = await asyncio.wait_for(keyed.answer(sender, sent, "are you there?", by="ana"), 60)
            assert got is None, got
            assert await sender.status(sent.session_id) == "failed"
    finally:
        await sender.close()
