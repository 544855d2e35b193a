"""Quiet steps (``PATCH_QUIET_STEPS``): the step's search attribute is not updated after
every step, yet it is right whenever the session settles.

Steps run back to back update VigilStep at most once a second of workflow time (each update
is a history event and a visibility write on the server); a status change, a wait and the
end update it at once, so a list of sessions by step is current for every session that is
waiting, paused or done, and at most about a second behind (one workflow task, in the
low-latency mode) for one that is running.
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    running_worker,
    session_input,
    start,
    stub_settings,
    until,
    wait_status,
)
from vigil.schema import names
from vigil.schema.payloads import Budget, MessageInput, SessionStatus, ToolPolicy
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration

CHEAP = ("http_fetch", {"url": "http://quiet.invalid/"})
STEPS = 6


async def _upserts(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(
        e.HasField("upsert_workflow_search_attributes_event_attributes") for e in history.events
    )


async def _published(handle: WorkflowHandle[Any, Any]) -> tuple[str | None, int | None]:
    found = (await handle.describe()).typed_search_attributes
    return found.get(names.SA_STATUS), found.get(names.SA_STEP)


async def test_steps_back_to_back_update_the_step_once_and_the_end_says_the_last(
    client: Client, settings: Settings, task_queue: str, stub: LLMStub
) -> None:
    stub.enqueue(*[Reply.tool_call(*CHEAP) for _ in range(STEPS)])
    no_approvals = ToolPolicy(require_approval=[])
    goal = session_input("fetch and fetch", budget=Budget(max_steps=STEPS), policy=no_approvals)
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, goal)
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.BUDGET_EXHAUSTED, STEPS)
    assert await _published(handle) == (SessionStatus.BUDGET_EXHAUSTED.value, STEPS)
    # The patch's version, the start and the end; a step's own only when a second of
    # workflow time passed (this machine may stall): never one per step.
    assert 3 <= await _upserts(handle) < 3 + STEPS


async def test_a_session_waiting_for_a_human_shows_the_step_it_waits_at(
    client: Client, settings: Settings, task_queue: str, stub: LLMStub
) -> None:
    stub.enqueue(
        Reply.tool_call(*CHEAP),
        Reply.tool_call(*CHEAP),
        Reply.tool_call("ask_human", {"question": "Go on?"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    no_approvals = ToolPolicy(require_approval=[])
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("ask", policy=no_approvals))
        await wait_status(handle, SessionStatus.WAITING_HUMAN)

        async def shown() -> tuple[str | None, int | None] | None:
            found = await _published(handle)
            return found if found[0] == SessionStatus.WAITING_HUMAN.value else None

        # Visibility is eventually consistent: the update lands shortly after the wait.
        assert await until(shown, what="the waiting status in visibility") == (
            SessionStatus.WAITING_HUMAN.value,
            3,
        )
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="yes", by="frank"))
        result = await handle.result()
    assert (result.status, result.steps) == (SessionStatus.COMPLETED, 4)
    assert await _published(handle) == (SessionStatus.COMPLETED.value, 4)
