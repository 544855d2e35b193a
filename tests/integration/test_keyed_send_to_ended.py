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

from tests.support.sessions import session_input
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
