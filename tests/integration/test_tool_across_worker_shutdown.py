"""A tool call cut off by its worker's shutdown (a deploy) is not one of its failures.

A worker stopped with SIGTERM cancels the calls still running once its grace period has
passed; Temporal gives each its next attempt on another worker. That attempt used to
count the one cut off as a failure (it ended without a result, as a lost worker's or a
timed-out one does), so a tool whose budget is one attempt was given up at once: the
model was told the call "failed for good" though nothing had failed, and a deploy during
a long call cost every session its call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.agent_tools import apply_agent, worker_settings
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    assert_whole,
    events,
    running_worker,
    session_input,
    start,
    stub_settings,
    tool_messages,
    transcript,
)
from vigil.schema.payloads import SessionStatus
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@dataclass
class SlowPage:
    """An agent whose ``http_fetch`` (one attempt allowed) reads a page of the stub that
    takes ``hold(n)`` seconds on its n-th fetch; the model asks for it, then finishes."""

    agent: str
    settings: Settings
    fetching: threading.Event = field(default_factory=threading.Event)
    gets: list[float] = field(default_factory=list)


async def _slow_page(
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    tmp_path: Path,
    stub: LLMStub,
    hold: Callable[[int], float],
) -> SlowPage:
    once = {"name": "http_fetch", "timeout_seconds": 60, "max_attempts": 1, "approval": "never"}
    agent = await apply_agent(settings, sessionmaker, tmp_path, [once])
    page = SlowPage(agent.name, stub_settings(settings, stub.url_openai, http_allow=stub.host_port))

    def on_get(path: str) -> None:
        if path == "/page":
            page.gets.append(time.monotonic())
            page.fetching.set()
            time.sleep(hold(len(page.gets)))

    stub.on_get = on_get
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "read the page"}),
    )
    return page


async def test_a_call_cut_off_by_its_workers_shutdown_runs_again_unspent(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    # The first fetch outlasts its worker, whose grace period is shorter than the call.
    page = await _slow_page(settings, sessionmaker, tmp_path, stub, lambda n: 8 if n == 1 else 0)
    hasty = page.settings.model_copy(update={"worker_graceful_shutdown_seconds": 0.0})
    async with running_worker(client, hasty, task_queue):
        handle = await start(client, task_queue, session_input("fetch", agent_id=page.agent))
        assert await asyncio.to_thread(page.fetching.wait, 30), "the fetch never started"
    async with running_worker(client, page.settings, task_queue):
        result = await asyncio.wait_for(handle.result(), 60)

    assert result.status == SessionStatus.COMPLETED, result
    assert len(page.gets) == 2, page.gets
    messages = await transcript(sessionmaker, handle.id)
    assert_whole(messages)
    (answer,) = [m for m in tool_messages(messages) if m.name == "http_fetch"]
    assert not answer.content.startswith("error:"), answer.content
    assert "failed for good" not in str(stub.requests[1].body)
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert call.payload["ok"] is True, call.payload
    assert call.payload["attempt"] == 2, call.payload


async def test_a_worker_told_to_stop_lets_a_running_call_finish_within_its_grace_period(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    page = await _slow_page(settings, sessionmaker, tmp_path, stub, lambda n: 2)
    patient = page.settings.model_copy(update={"worker_graceful_shutdown_seconds": 30.0})
    async with running_worker(client, patient, task_queue):
        handle = await start(client, task_queue, session_input("fetch", agent_id=page.agent))
        assert await asyncio.to_thread(page.fetching.wait, 30), "the fetch never started"
    # The stopping worker waited for the call: its answer is recorded already.
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert call.payload["ok"] is True, call.payload
    assert call.payload["attempt"] == 1, call.payload
    async with running_worker(client, page.settings, task_queue):
        result = await asyncio.wait_for(handle.result(), 60)

    assert result.status == SessionStatus.COMPLETED, result
    assert len(page.gets) == 1, page.gets
    assert_whole(await transcript(sessionmaker, handle.id))


async def test_a_tools_own_retries_do_not_count_the_attempt_cut_off(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    task_queue: str,
    stub: LLMStub,
    tmp_path: Path,
) -> None:
    """A Python tool allowed two attempts (``max_attempts=2``), cut off on its first and
    asking for a retry (``ToolRetry``) on its second, is given its third: it had failed
    once. Its own count took the attempt cut off as one, and gave up after two."""
    agent = await apply_agent(
        settings, sessionmaker, tmp_path, ["held_then_busy"], modules=["tests.support.py_tools"]
    )
    journal = tmp_path / "attempts.txt"
    stub.enqueue(
        Reply.tool_call("held_then_busy", {"journal": str(journal)}),
        Reply.tool_call("finish", {"summary": "answered"}),
    )
    cfg = worker_settings(settings, stub.url_openai, "tests.support.py_tools")
    hasty = cfg.model_copy(update={"worker_graceful_shutdown_seconds": 0.0})
    async with running_worker(client, hasty, task_queue):
        handle = await start(client, task_queue, session_input("hold", agent_id=agent.name))
        for _ in range(300):
            if journal.exists() and journal.read_text():
                break
            await asyncio.sleep(0.1)
        assert journal.read_text() == "1\n", "the first attempt never started"
    async with running_worker(client, cfg, task_queue):
        result = await asyncio.wait_for(handle.result(), 60)

    assert result.status == SessionStatus.COMPLETED, result
    assert journal.read_text().split() == ["1", "2", "3"]
    (call,) = await events(sessionmaker, handle.id, "tool_call")
    assert (call.payload["ok"], call.payload["output_preview"]) == (True, "done on attempt 3")
