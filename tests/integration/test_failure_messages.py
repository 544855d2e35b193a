"""A failed activity attempt says what happened, in a few words, where operators look.

Temporal UI and `temporal workflow describe` show a pending activity's last failure; the
server replaces a failure over its size limit by "Failure exceeds size limit.", which is
what long tracebacks (a database driver's, a RecursionError's) used to turn into. Each
cause here is read back from the real server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.history import activity_runs
from tests.support.llm_stub import LLMStub, Reply
from tests.support.outage import PartOutage, pending_failure
from tests.support.sessions import (
    assert_whole,
    running_worker,
    session_input,
    start,
    stub_settings,
    transcript,
    until,
)
from vigil.activities.models.base import ChatMessage, ModelReply, ToolSpec
from vigil.schema import names
from vigil.schema.payloads import SessionResult, SessionStatus
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack

# Stops a part of the shared test stack: runs alone, after the parallel phase.
pytestmark = [pytest.mark.integration, pytest.mark.disruptive]

SHORT = 300
"""Longest acceptable failure message: a sentence, not a traceback."""


@pytest.fixture
def postgres(stack: Stack) -> Iterator[PartOutage]:
    with PartOutage(stack, "postgres").restoring() as outage:
        yield outage


async def test_a_database_outage_is_named_in_the_pending_activity_and_history(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    stack: Stack,
    postgres: PartOutage,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    calls = itertools.count(1)

    def answer(body: Any) -> Reply:
        if next(calls) == 1:
            postgres.stop()  # the reply then cannot be recorded
        return Reply.text("all done")

    stub.default = answer
    port = stack.settings.postgres_port
    async with running_worker(client, stub_settings(settings, stub.url_openai), task_queue):
        handle = await start(client, task_queue, session_input("outlive an outage"))
        shown = await until(
            lambda: pending_failure(handle, "refused"), within=60, what="a refused attempt"
        )
        await asyncio.to_thread(postgres.start)
        result: SessionResult = await handle.result()

    assert shown == f"PostgreSQL unavailable: connection refused (127.0.0.1:{port})"
    assert result.status == SessionStatus.COMPLETED
    model_runs = await activity_runs(handle, names.ACT_CALL_MODEL)
    assert model_runs[-1].attempt > 1
    last = model_runs[-1].last_failure
    assert last.startswith("PostgreSQL unavailable: "), last
    assert len(last) < SHORT
    assert_whole(await transcript(sessionmaker, handle.id))


def _walk_list(n: int) -> int:
    return _walk_dict(n + 1)


def _walk_dict(n: int) -> int:
    return _walk_list(n + 1)


class _RecursingModel:
    """A model client with a bug: every call dies of RecursionError in mutual recursion
    (as a JSON encoder walking nested lists and objects does), so the traceback has a
    thousand distinct lines that Python cannot fold."""

    async def complete(
        self, messages: list[ChatMessage], tools: list[ToolSpec], *, max_tokens: int | None = None
    ) -> ModelReply:
        _walk_list(0)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


async def test_a_recursion_error_is_named_not_hidden_by_the_size_limit(
    client: Client, settings: Settings, task_queue: str
) -> None:
    async with running_worker(client, settings, task_queue, provider=_RecursingModel()):
        handle = await start(client, task_queue, session_input("recurse"))
        try:
            shown = await until(
                lambda: pending_failure(handle), within=60, what="a failed model attempt"
            )
        finally:
            await handle.terminate("test over")
    assert shown.startswith("RecursionError: maximum recursion depth exceeded"), shown
    assert len(shown) < SHORT
