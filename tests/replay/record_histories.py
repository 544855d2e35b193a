"""Record representative AgentSession histories for the replay tests.

Runs a few sessions on the test stack (the same Temporal dev server, PostgreSQL and ports
as the integration tests, started if needed) against the local LLM stub, and saves each
workflow history as JSON under ``tests/replay/histories/<name>.json``. Re-run it after a
deliberate, versioned change of the workflow, and commit the files::

    uv run python -m tests.replay.record_histories            # every scenario
    uv run python -m tests.replay.record_histories wait_until  # only some
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue

from tests.support.held_end import (
    cancel_landed,
    end_write_waiting,
    session_row_held,
    signals_in_history,
)
from tests.support.llm_stub import LLMStub, Reply
from tests.support.locks import waiting_for_lock
from tests.support.mcp_probe import stdio_spec
from tests.support.outage import pending_failure
from tests.support.queued_tools import TOOLS_QUEUE
from tests.support.sessions import (
    eventually,
    first_task_completed,
    hand_over_while_waiting,
    raw_json,
    reset_to_first_task,
    running_worker,
    start,
    state,
    stub_settings,
    until,
)
from tests.support.teststack import ROOT, scratch_stack
from tests.support.webhook_receiver import webhook_receiver
from vigil.schema import cancel_reason, names
from vigil.schema.agents import AgentSpec, ToolEntry
from vigil.schema.limits import MAX_QUEUED_BYTES
from vigil.schema.payloads import (
    MAX_HUMAN_TEXT,
    Ack,
    ApproveInput,
    Budget,
    MessageInput,
    PauseInput,
    RedirectInput,
    ResumeInput,
    SessionStatus,
    StartSessionInput,
    ToolPolicy,
    WakeInput,
)
from vigil.workers.agents import AgentService
from vigil.workers.client import VigilClient
from vigil.workers.codec import ENCODING, META_KEY_ID
from vigil.workers.credentials import CredentialService
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.models import credential_resolver
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect
from vigil.workers.tool_wiring import tool_sourcing, with_worker_flags
from vigil.workflows.session import AgentSession

HISTORIES = Path(__file__).resolve().parent / "histories"
DATABASE = "vigil_replay_record"
SMALL_HISTORY = 150_000
"""A session's own history limit small enough for a few refused signals to pass it."""


@dataclass
class Ctx:
    client: Client
    stub: LLMStub
    task_queue: str
    sessionmaker: async_sessionmaker[DbSession]
    settings: Settings
    """The session worker's (it loads tests.support.py_tools)."""

    def fetch(self, path: str) -> Reply:
        return Reply.tool_call("http_fetch", {"url": f"{self.stub.url}{path}"})

    async def start(self, name: str, arg: StartSessionInput) -> WorkflowHandle[Any, Any]:
        return await start(
            self.client, self.task_queue, arg, session_id=f"replay-{name}-{uuid.uuid4().hex[:8]}"
        )


def _arg(goal: str, **extra: Any) -> StartSessionInput:
    extra.setdefault("policy", ToolPolicy(require_approval=[]))
    return StartSessionInput(agent_id="agent-replay", goal=goal, **extra)


def finish(summary: str) -> Reply:
    return Reply.tool_call("finish", {"summary": summary})


async def tools_finish(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Two tool calls in one turn, another turn, then finish."""
    ctx.stub.enqueue(
        Reply.tool_calls(
            ("http_fetch", {"url": f"{ctx.stub.url}/a"}),
            ("http_fetch", {"url": f"{ctx.stub.url}/b"}),
            content="Looking.",
        ),
        ctx.fetch("/c"),
        finish("fetched three pages"),
    )
    handle = await ctx.start("tools_finish", _arg("fetch three pages"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def approval_approve(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """http_fetch needs approval by default; a human approves with edited arguments."""
    ctx.stub.enqueue(ctx.fetch("/draft"), finish("fetched after approval"))
    handle = await ctx.start("approval_approve", _arg("fetch with approval", policy=ToolPolicy()))
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    approval = waiting.pending_approvals[0].approval_id
    await handle.execute_update(
        names.UPD_APPROVE,
        ApproveInput(
            approval_id=approval,
            by="alice",
            note="fine, but the final page",
            edited_arguments={"url": f"{ctx.stub.url}/final"},
        ),
    )
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def pause_resume(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Paused by a signal while the model thinks; resumed by a signal."""
    ctx.stub.enqueue(Reply.hang(1.0, then=ctx.fetch("/x")), finish("done after a pause"))
    handle = await ctx.start("pause_resume", _arg("work, pause, work"))
    await eventually(handle, lambda s: s.step == 0 and s.status == SessionStatus.RUNNING)
    await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="lunch"))
    await eventually(handle, lambda s: s.status == SessionStatus.PAUSED)
    await asyncio.sleep(0.5)
    await handle.signal(names.SIG_RESUME, ResumeInput(by="bob"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def continue_as_new(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Five steps at two per run: three runs. The first and the last run are recorded."""
    ctx.stub.enqueue(*[ctx.fetch(f"/{n}") for n in range(4)], finish("five steps, three runs"))
    handle = await ctx.start("continue_as_new", _arg("go long", steps_per_run=2))
    result = await handle.result()  # follows the runs to the last
    _expect(result, SessionStatus.COMPLETED)
    assert result.runs == 3, result
    first = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first, ctx.client.get_workflow_handle(handle.id)]


async def runs_take_a_step(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Started with ``steps_per_run`` 0 (unchecked, as a plain Temporal client may): each
    run takes one step (PATCH_RUNS_TAKE_A_STEP); two steps, two runs, both recorded."""
    ctx.stub.enqueue(ctx.fetch("/0"), finish("one step a run"))
    handle = await ctx.start("runs_take_a_step", _arg("go on", steps_per_run=0))
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert (result.steps, result.runs) == (2, 2), result
    first = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first, ctx.client.get_workflow_handle(handle.id)]


async def earlier_session_id(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A second workflow under the id of a session that completed: its first records find
    the id's record opened for the earlier one, and it fails writing nothing. Its run is
    recorded."""
    ctx.stub.enqueue(finish("done once"))
    first = await ctx.start("earlier_session_id", _arg("once"))
    _expect(await first.result(), SessionStatus.COMPLETED)
    again = await start(ctx.client, ctx.task_queue, _arg("once"), session_id=first.id)
    try:
        await again.result()
    except WorkflowFailureError as exc:
        assert "belongs to an earlier session" in str(exc.cause), exc.cause
    else:
        raise AssertionError("the second run under the id did not fail")
    return [again]


async def budget_exhausted(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """The model never finishes; the step budget ends the session."""
    ctx.stub.enqueue(*[ctx.fetch(f"/{n}") for n in range(5)])
    handle = await ctx.start("budget_exhausted", _arg("never stop", budget=Budget(max_steps=2)))
    _expect(await handle.result(), SessionStatus.BUDGET_EXHAUSTED)
    return [handle]


async def wait_until(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A durable timer: the session sleeps a second, then finishes."""
    ctx.stub.enqueue(
        Reply.tool_call("wait_until", {"seconds": 1, "reason": "let it settle"}),
        finish("woke and finished"),
    )
    handle = await ctx.start("wait_until", _arg("sleep a little"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def provider_rejected(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A 400 from the provider fails the session (non-retryable)."""
    ctx.stub.enqueue(Reply.status(400, message="max_tokens is too large"))
    handle = await ctx.start("provider_rejected", _arg("ask too much"))
    try:
        await handle.result()
    except WorkflowFailureError:
        return [handle]
    raise AssertionError("provider_rejected: the session should have failed")


async def hand_over_waiting(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Waiting for approval, the session's history passes max_history_bytes (refused
    signals): it continues-as-new while waiting, carrying the approval and a queued
    message; the next run takes the approval and finishes. Both runs are recorded."""
    ctx.stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "note.md", "content": "approved"}),
        finish("approved across two runs"),
    )
    policy = ToolPolicy(require_approval=["write_artifact"])
    arg = _arg("write after approval", policy=policy, max_history_bytes=64_000)
    handle = await ctx.start("hand_over_waiting", arg)
    await eventually(handle, lambda s: bool(s.pending_approvals))
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="a queued note", by="dave"))
    refused = MessageInput(text="r" * (MAX_HUMAN_TEXT + 1), by="mallory")
    for _ in range(10):
        await handle.signal(names.SIG_MESSAGE, refused)
        await asyncio.sleep(0.5)
        if (await state(handle)).run_index > 1:
            break
    waiting = await eventually(handle, lambda s: s.run_index == 2 and bool(s.pending_approvals))
    await handle.execute_update(
        names.UPD_APPROVE,
        ApproveInput(approval_id=waiting.pending_approvals[0].approval_id, by="alice"),
    )
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.runs == 2, result
    first = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first, ctx.client.get_workflow_handle(handle.id)]


async def budgeted_retries(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A 500 from the provider is retried within the call's own budget (counted by the
    activity since the infra-retry patch), then a tool runs and the session finishes."""
    ctx.stub.enqueue(Reply.status(500), ctx.fetch("/retried"), finish("done after a retry"))
    policy = ToolPolicy(require_approval=[], model_max_attempts=3, tool_max_attempts=3)
    handle = await ctx.start("budgeted_retries", _arg("retry once", policy=policy))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def agent_definition(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An agent with a definition: the session pins its version, offers its catalog, asks
    for approval by an argument rule, and runs the edited call bound to its digest."""
    name = "agent-defined"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "system_prompt": "You are {agent}. Goal: {goal}",
                "model": {"temperature": 0.1, "max_tokens": 500},
                "tools": [
                    {
                        "name": "http_fetch",
                        "approve_when": [{"argument": "url", "host_not_in": ["trusted.test"]}],
                    },
                    {"name": "read_artifact"},
                ],
                "budget": {"max_steps": 8},
            }
        )
    )
    ctx.stub.enqueue(ctx.fetch("/draft"), finish("fetched as approved"))
    handle = await ctx.start(
        "agent_definition", StartSessionInput(agent_id=name, goal="fetch with a definition")
    )
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    approval = waiting.pending_approvals[0]
    await handle.execute_update(
        names.UPD_APPROVE,
        ApproveInput(
            approval_id=approval.approval_id,
            by="alice",
            edited_arguments={"url": f"{ctx.stub.url}/final"},
            digest=approval.digest,
        ),
    )
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def prompt_follows_goal(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A redirect (no version) while an approval waits: its goal fills the agent prompt's
    ``{goal}`` (PATCH_PROMPT_FOLLOWS_GOAL)."""
    handle = await _redirect_in_a_prompted_session(ctx, "prompt_follows_goal")
    _expect(await handle.result(), SessionStatus.COMPLETED)
    _expect_second_goal_prompted(ctx)
    return [handle]


async def prompt_follows_goal_across_runs(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """The same redirect with one step a run: the next run reads its agent again (its
    prompt rendered from the start's goal) and fills in the redirect's. The first and the
    last run are recorded."""
    handle = await _redirect_in_a_prompted_session(
        ctx, "prompt_follows_goal_across_runs", steps_per_run=1
    )
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.runs >= 2, result
    _expect_second_goal_prompted(ctx)
    first = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first, ctx.client.get_workflow_handle(handle.id)]


PROMPTED_AGENT = "agent-prompted"


async def _redirect_in_a_prompted_session(
    ctx: Ctx, name: str, **start: Any
) -> WorkflowHandle[Any, Any]:
    """A session of an agent whose prompt holds ``{goal}``, redirected while the approval
    of its fetch waits, then approved."""
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": PROMPTED_AGENT,
                "system_prompt": "You are {agent}. Goal: {goal}",
                "tools": [{"name": "http_fetch", "approval": "always"}],
            }
        )
    )
    ctx.stub.enqueue(ctx.fetch("/draft"), finish("fetched for the second goal"))
    handle = await ctx.start(
        name, StartSessionInput(agent_id=PROMPTED_AGENT, goal="the first goal", **start)
    )
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    await handle.execute_update(
        names.UPD_REDIRECT, RedirectInput(goal="the second goal", by="alice")
    )
    await handle.execute_update(
        names.UPD_APPROVE,
        ApproveInput(approval_id=waiting.pending_approvals[0].approval_id, by="alice"),
    )
    return handle


def _expect_second_goal_prompted(ctx: Ctx) -> None:
    prompts = [r.body["messages"][0]["content"] for r in ctx.stub.requests[-2:]]
    assert prompts[-1] == f"You are {PROMPTED_AGENT}. Goal: the second goal", prompts


async def agent_python_mcp_tools(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An agent with Python tools and an MCP server (stdio): a Python and an MCP tool in
    one turn (the MCP tool named server.tool), a tool on a tool worker's queue (probed,
    then run there), a tool whose queue nobody serves (probed: a tool error), an external
    MCP tool after approval, finish."""
    name = "agent-python-mcp"
    sourcing = tool_sourcing(
        with_worker_flags(ctx.settings, ["tests.support.queued_tools"], None, False),
        credential_resolver(ctx.settings, ctx.sessionmaker).resolve,
    )
    await AgentService(ctx.sessionmaker, sourcing).apply_spec(
        AgentSpec(
            name=name,
            system_prompt="You are {agent}. Goal: {goal}",
            tools=[
                ToolEntry(name="word_count"),
                ToolEntry(name="worker_pid"),
                ToolEntry(name="render_frames"),
            ],
            mcp_servers=[stdio_spec(tools=["echo", "append_line"])],
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        ctx.stub.enqueue(
            Reply.tool_calls(
                ("word_count", {"text": "one two"}), ("probe__echo", {"text": "hi", "times": 2})
            ),
            Reply.tool_call("worker_pid", {}),
            Reply.tool_call("render_frames", {"count": 3}),
            Reply.tool_call("probe__append_line", {"path": f"{tmp}/out.txt", "line": "ok"}),
            finish("counted, echoed, asked a tool worker, appended after approval"),
        )
        tools_only = ctx.settings.model_copy(
            update={"tool_modules": "tests.support.queued_tools", "tools_only": True}
        )
        async with running_worker(ctx.client, tools_only, TOOLS_QUEUE):
            handle = await ctx.start(
                "agent_python_mcp_tools", StartSessionInput(agent_id=name, goal="use every tool")
            )
            waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
            approval = waiting.pending_approvals[0]
            await handle.execute_update(
                names.UPD_APPROVE,
                ApproveInput(approval_id=approval.approval_id, by="alice", digest=approval.digest),
            )
            _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def transcript_ui(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """What Temporal UI shows: the model's words, a paused approval wait with its timer
    summary, an approval with edited arguments by one person and a pause and resume by
    another (named in the record summaries), a sleep with its timer summary, finish."""
    ctx.stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{ctx.stub.url}/draft"}, content="Fetching first."),
        Reply.tool_call("wait_until", {"seconds": 1, "reason": "let it settle"}),
        finish("fetched the final page, slept, done"),
    )
    handle = await ctx.start("transcript_ui", _arg("fetch, wait, finish", policy=ToolPolicy()))
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    # Time for the wait's timer to be started (a decision in the same workflow task would
    # leave no timer in history).
    await asyncio.sleep(1.0)
    await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="check it first"))
    await eventually(handle, lambda s: s.paused)
    await asyncio.sleep(1.0)
    await handle.execute_update(
        names.UPD_APPROVE,
        ApproveInput(
            approval_id=waiting.pending_approvals[0].approval_id,
            by="alice",
            edited_arguments={"url": f"{ctx.stub.url}/final"},
        ),
    )
    await eventually(handle, lambda s: s.status == SessionStatus.PAUSED)
    await handle.execute_update(names.UPD_RESUME, ResumeInput(by="bob"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def webhooks(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An agent file with a webhook on every event: an approval is requested (a delivery
    starts), a human is asked (another), the session ends (a third); the receiver is down
    at first, so the deliveries retry while the session goes on."""
    return await _webhooks(ctx, "webhooks")


async def delivery_per_chain(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """``webhooks`` with the deliveries' ids naming the session's chain of runs (asked
    under ``vigil-delivery-per-chain``)."""
    return await _webhooks(ctx, "delivery_per_chain")


async def _webhooks(ctx: Ctx, scenario: str) -> list[WorkflowHandle[Any, Any]]:
    name = f"agent-{scenario.replace('_', '-')}"
    await CredentialService(ctx.settings, ctx.sessionmaker).set("replay-webhook", "whsec-replay")
    with webhook_receiver(fail_first=1) as receiver:
        await AgentService(ctx.sessionmaker).apply_spec(
            AgentSpec.model_validate(
                {
                    "name": name,
                    "tools": [{"name": "http_fetch", "approval": "always"}, {"name": "ask_human"}],
                    "webhooks": [
                        {
                            "url": receiver.url,
                            "events": ["approval_requested", "human_asked", "session_ended"],
                            "secret": "replay-webhook",
                        }
                    ],
                }
            )
        )
        ctx.stub.enqueue(
            ctx.fetch("/page"),
            Reply.tool_call("ask_human", {"question": "Good enough?"}),
            finish("fetched, asked, done"),
        )
        # Child workflow ids derive from the session's id: record under the id the replay
        # test gives the history (replay-<file name>), so the ids match on replay.
        handle = await start(
            ctx.client,
            ctx.task_queue,
            StartSessionInput(agent_id=name, goal="notify"),
            session_id=f"replay-{scenario}",
        )
        waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
        approval = waiting.pending_approvals[0]
        await handle.execute_update(
            names.UPD_APPROVE,
            ApproveInput(approval_id=approval.approval_id, by="alice", digest=approval.digest),
        )
        await eventually(handle, lambda s: s.status == SessionStatus.WAITING_HUMAN)
        await handle.execute_update(names.UPD_MESSAGE, MessageInput(text="yes", by="alice"))
        _expect(await handle.result(), SessionStatus.COMPLETED)
        deadline = time.monotonic() + 60
        while len(receiver.delivered()) < 3:
            assert time.monotonic() < deadline, receiver.requests
            await asyncio.sleep(0.2)
    return [handle]


async def cancel_by(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Cancelled while waiting for an approval, by a named person with a reason (as
    `vigil cancel --by erin --reason enough` sends it in Temporal's cancel reason)."""
    ctx.stub.enqueue(ctx.fetch("/never"), finish("not reached"))
    handle = await ctx.start("cancel_by", _arg("wait to be cancelled", policy=ToolPolicy()))
    await eventually(handle, lambda s: bool(s.pending_approvals))
    await handle.cancel(reason=cancel_reason.reason_text("erin", "enough"))
    try:
        await handle.result()
    except WorkflowFailureError:
        return [handle]
    raise AssertionError("cancel_by: the session should have been cancelled")


async def folded_step(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """One activity per step: two calls run inside the model activity, a message sent
    while the model thinks rides in the next model call's input, finish checked there."""
    ctx.stub.enqueue(
        Reply.tool_calls(
            ("http_fetch", {"url": f"{ctx.stub.url}/a"}),
            ("http_fetch", {"url": f"{ctx.stub.url}/b"}),
        ),
        Reply.hang(1.0, then=ctx.fetch("/c")),
        finish("two steps, one activity each"),
    )
    handle = await ctx.start("folded_step", _arg("fetch in one round trip"))
    await eventually(handle, lambda s: s.step == 1)
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="and page c", by="carol"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def local_model_calls(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """The low-latency mode: an agent whose model calls run as local activities, a
    folded tool call, a pause while the model thinks long, resume, finish."""
    name = "agent-local"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"execution": "local"},
                "tools": [{"name": "http_fetch", "approval": "never"}, {"name": "finish"}],
            }
        )
    )
    # Longer than the SDK's workflow task heartbeat (80% of the 10 s task timeout): the
    # pause is applied while the call still runs, and holds before the next one.
    ctx.stub.enqueue(Reply.hang(9.5, then=ctx.fetch("/x")), finish("local and done"))
    handle = await ctx.start(
        "local_model_calls", StartSessionInput(agent_id=name, goal="think close by")
    )
    await until(lambda: bool(ctx.stub.requests), what="the model thinking")
    await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="a look"))
    await eventually(handle, lambda s: s.status == SessionStatus.PAUSED)
    await handle.signal(names.SIG_RESUME, ResumeInput(by="bob"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def _batching_agent(ctx: Ctx, name: str) -> str:
    """A low-latency agent whose batches last up to 5 s (read_artifact and finish)."""
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"execution": "local", "batch_ms": 5000},
                "tools": [{"name": "read_artifact"}, {"name": "finish"}],
            }
        )
    )
    return name


async def step_batches(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """The low-latency mode's step batches: three plain steps (a read each, answered in
    the model call) and the finish, all four taken by one model call."""
    name = await _batching_agent(ctx, "agent-batches")
    read = Reply.tool_call("read_artifact", {"name": "notes.txt"})
    ctx.stub.enqueue(read, read, read, finish("read three times"))
    handle = await ctx.start("step_batches", StartSessionInput(agent_id=name, goal="read on"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def default_step_batches(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """The default mode's step batches: three plain steps and the finish, all four taken
    by one model call, a regular activity (``vigil-default-step-batches``)."""
    name = "agent-default-batches"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"batch_ms": 5000},
                "tools": [{"name": "read_artifact"}, {"name": "finish"}],
            }
        )
    )
    read = Reply.tool_call("read_artifact", {"name": "notes.txt"})
    ctx.stub.enqueue(read, read, read, finish("read three times"))
    handle = await ctx.start(
        "default_step_batches", StartSessionInput(agent_id=name, goal="read on")
    )
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def hand_back_with_input(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A batch's second step hangs past the workflow task's heartbeat (a message arrives
    meanwhile), then fails: the step is handed back and taken again alone, the message
    joins after it, and a third step answers it."""
    name = await _batching_agent(ctx, "agent-hand-back")
    read = Reply.tool_call("read_artifact", {"name": "notes.txt"})
    # Under the worker's model timeout (15 s), past the task's heartbeat (~8 s).
    ctx.stub.enqueue(read, Reply.hang(12.0, then=Reply.garbage()), read, finish("answered"))
    handle = await ctx.start(
        "hand_back_with_input", StartSessionInput(agent_id=name, goal="read and listen")
    )
    await until(lambda: len(ctx.stub.requests) >= 2, what="the batch's second step")
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="also the tide table", by="ops"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def hand_back_waits(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A batch's second step meets a 429 asking for 2 s: the step is handed back, and the
    workflow waits on a durable timer before it takes it again
    (``vigil-handed-back-waits``)."""
    name = await _batching_agent(ctx, "agent-hand-back-waits")
    read = Reply.tool_call("read_artifact", {"name": "notes.txt"})
    ctx.stub.enqueue(read, Reply.status(429, retry_after=2), read, finish("waited"))
    handle = await ctx.start("hand_back_waits", StartSessionInput(agent_id=name, goal="read on"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def carried_provider_wait(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A batch's second step meets a 429 asking for 20 s; while the step waits, refused
    signals make the session hand over (a small ``max_history_bytes``), and the next run
    waits out the rest (``vigil-carried-provider-wait``). Both runs are recorded."""
    name = await _batching_agent(ctx, "agent-carried-provider-wait")
    read = Reply.tool_call("read_artifact", {"name": "notes.txt"})
    ctx.stub.enqueue(read, Reply.status(429, retry_after=20), read, finish("waited"))
    arg = StartSessionInput(agent_id=name, goal="read on", max_history_bytes=SMALL_HISTORY)
    handle = await ctx.start("carried_provider_wait", arg)
    await until(lambda: len(ctx.stub.requests) == 2)
    await hand_over_while_waiting(handle)
    _expect(await handle.result(), SessionStatus.COMPLETED)
    first_run = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first_run, ctx.client.get_workflow_handle(handle.id)]


async def late_approval(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An approval of 2 s expires while no worker runs the session; the approval comes
    after that, and the worker that comes back takes it in the task of the expiry's
    timer: refused as input (``vigil-no-decision-past-expiry``), the timeout rejects the
    call. The scenario runs its own worker on a queue of its own (it stops it midway)."""
    ctx.stub.enqueue(ctx.fetch("/late"), finish("not fetched"))
    queue = f"{ctx.task_queue}-late"
    arg = _arg("fetch with approval", policy=ToolPolicy(approval_timeout_seconds=2))
    handle = await start(
        ctx.client, queue, arg, session_id=f"replay-late_approval-{uuid.uuid4().hex[:8]}"
    )
    async with running_worker(ctx.client, ctx.settings, queue):
        await eventually(handle, lambda s: bool(s.pending_approvals))
    await asyncio.sleep(4.0)
    await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="late-ana"))
    async with running_worker(ctx.client, ctx.settings, queue):
        _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def cancel_inside_a_batch(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Cancelled while a batch's call waits on the model for its third step: the ending
    closes the two steps the call recorded and tells its end at step 2."""
    name = await _batching_agent(ctx, "agent-cancel-batch")
    read = Reply.tool_call("read_artifact", {"name": "notes.txt"})
    ctx.stub.enqueue(read, read, Reply.hang(12.0, then=finish("not reached")))
    handle = await ctx.start(
        "cancel_inside_a_batch", StartSessionInput(agent_id=name, goal="read until cancelled")
    )
    await until(lambda: len(ctx.stub.requests) >= 3, what="the batch's third step")
    await handle.cancel()
    try:
        await handle.result()
    except WorkflowFailureError:
        return [handle]
    raise AssertionError("cancel_inside_a_batch: the session should have been cancelled")


MOVING_KEY = "VIGIL_REPLAY_MOVING_KEY"
"""The credential of the recording worker's ``moving`` connection, set only once
``local_call_moves`` has seen its call wait."""


async def local_call_moves(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A low-latency call on a worker not set up for it (its connection's credential is
    not there): the call moves to a regular activity, which waits until it is."""
    name = "agent-local-moves"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {"name": name, "model": {"execution": "local", "connection": "moving"}}
        )
    )
    ctx.stub.enqueue(finish("moved and done"))
    os.environ.pop(MOVING_KEY, None)
    handle = await ctx.start("local_call_moves", StartSessionInput(agent_id=name, goal="go far"))
    await until(
        lambda: pending_failure(handle, MOVING_KEY), within=60, what="the moved call waiting"
    )
    os.environ[MOVING_KEY] = "sk-replay"
    try:
        _expect(await handle.result(), SessionStatus.COMPLETED)
    finally:
        os.environ.pop(MOVING_KEY, None)
    return [handle]


async def line_text_nul(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Signals whose one-line text holds NUL, sent while an approval waits (a redirect's
    goal, a pause's reason): refused as input, asked under ``vigil-line-text-nul``; the
    approval then lets the session finish on its first goal."""
    policy = ToolPolicy(require_approval=["write_artifact"])
    ctx.stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}), finish("wrote it")
    )
    handle = await ctx.start("line_text_nul", _arg("write", policy=policy))
    await eventually(handle, lambda s: bool(s.pending_approvals))
    await handle.signal(names.SIG_REDIRECT, RedirectInput(goal="new\x00goal", by="eve"))
    await handle.signal(names.SIG_PAUSE, PauseInput(reason="lu\x00nch", by="eve"))
    await eventually(handle, lambda s: s.rejected_inputs >= 2)
    await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def pause_state_signals(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A ``resume`` signal while the session sleeps unpaused and a second ``pause`` while
    it is paused: refused as input, asked under ``vigil-pause-state-signals``; then a
    resume and a wake let it finish."""
    ctx.stub.enqueue(
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "settle"}), finish("woke")
    )
    handle = await ctx.start(
        "pause_state_signals", _arg("sleep", policy=ToolPolicy(require_approval=[]))
    )
    await eventually(handle, lambda s: s.status == SessionStatus.SLEEPING)
    await handle.signal(names.SIG_RESUME, ResumeInput(by="ann"))
    await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="look"))
    await handle.signal(names.SIG_PAUSE, PauseInput(by="cy", reason="again"))
    await eventually(handle, lambda s: s.rejected_inputs >= 2 and s.paused)
    await handle.signal(names.SIG_RESUME, ResumeInput(by="bob"))
    await eventually(handle, lambda s: not s.paused)
    await handle.signal(names.SIG_WAKE, WakeInput(by="bob"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def _word_count_waiting(ctx: Ctx, scenario: str) -> tuple[WorkflowHandle[Any, Any], str]:
    """A session of an agent with the Python tool ``word_count`` (approval required)
    whose model asked for one count: its handle and the pending approval's id."""
    name = f"agent-{scenario.replace('_', '-')}"
    sourcing = tool_sourcing(
        with_worker_flags(ctx.settings, ["tests.support.py_tools"], None, False),
        credential_resolver(ctx.settings, ctx.sessionmaker).resolve,
    )
    await AgentService(ctx.sessionmaker, sourcing).apply_spec(
        AgentSpec(name=name, tools=[ToolEntry(name="word_count")])
    )
    ctx.stub.enqueue(Reply.tool_call("word_count", {"text": "a b"}), finish("counted"))
    policy = ToolPolicy(require_approval=["word_count"])
    handle = await ctx.start(
        scenario, StartSessionInput(agent_id=name, goal="count", policy=policy)
    )
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    return handle, waiting.pending_approvals[0].approval_id


async def whole_numbers(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An approval signal whose edited arguments give a Python tool an integer no float
    holds (``1e30``): refused, asked under ``vigil-whole-numbers``; the call then runs as
    asked once approved."""
    handle, approval_id = await _word_count_waiting(ctx, "whole_numbers")
    edited = {"text": "a b", "min_length": 1e30}
    await handle.signal(
        names.SIG_APPROVE, ApproveInput(approval_id=approval_id, by="eve", edited_arguments=edited)
    )
    await eventually(handle, lambda s: s.rejected_inputs >= 1)
    await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id=approval_id, by="ana"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def finite_edits(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An approval signal (plain JSON, as a raw client sends it) whose edited arguments
    hold NaN: refused, asked under ``vigil-finite-edits``; the call then runs as asked
    once approved."""
    handle, approval_id = await _word_count_waiting(ctx, "finite_edits")
    edited = {"text": "a b", "min_length": float("nan")}
    raw = {"approval_id": approval_id, "by": "eve", "edited_arguments": edited}
    await handle.signal(names.SIG_APPROVE, raw)
    await eventually(handle, lambda s: s.rejected_inputs >= 1)
    await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id=approval_id, by="ana"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def batch_wait_step(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """One model call takes two steps (a batch): a plain read, then a write that waits for
    approval; the wait hands over to the next run (a small ``max_history_bytes``) with the
    write's step (asked under ``vigil-batch-wait-step``), where it is approved. Both runs
    are recorded."""
    name = "agent-batch-wait-step"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "model": {"batch_ms": 5000},
                "tools": [{"name": t} for t in ("read_artifact", "write_artifact", "finish")],
            }
        )
    )
    ctx.stub.enqueue(
        Reply.tool_call("read_artifact", {"name": "notes.txt"}),
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}),
        finish("wrote it"),
    )
    policy = ToolPolicy(require_approval=["write_artifact"])
    arg = StartSessionInput(
        agent_id=name, goal="read, write", policy=policy, max_history_bytes=SMALL_HISTORY
    )
    handle = await ctx.start("batch_wait_step", arg)
    await eventually(handle, lambda s: [p.approval_id for p in s.pending_approvals] == ["a2-0"])
    await hand_over_while_waiting(handle)
    await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a2-0", by="alice"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    first_run = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first_run, ctx.client.get_workflow_handle(handle.id)]


async def ask_after_queued(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A message sent while the model call ran, whose reply asks a question: the message
    waits for the next step (asked under ``vigil-ask-after-queued``); the question hands
    over to the next run (a small ``max_history_bytes``), where a later message answers
    it. Both runs are recorded."""
    ctx.stub.enqueue(
        Reply.hang(2.0, then=Reply.tool_call("ask_human", {"question": "Which colour?"})),
        finish("asked"),
    )
    handle = await ctx.start(
        "ask_after_queued", _arg("make a report", max_history_bytes=SMALL_HISTORY)
    )
    await until(lambda: len(ctx.stub.requests) == 1)
    await handle.execute_update(names.UPD_MESSAGE, MessageInput(text="add a chart", by="gina"))
    await eventually(handle, lambda s: s.status == SessionStatus.WAITING_HUMAN)
    await hand_over_while_waiting(handle)
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="blue", by="frank"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    first_run = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first_run, ctx.client.get_workflow_handle(handle.id)]


async def linear_patterns(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """An approval signal with edited arguments, checked against the tool's schema with
    its patterns matched in linear time (asked under ``vigil-linear-patterns``); the
    edited call runs."""
    handle, approval_id = await _word_count_waiting(ctx, "linear_patterns")
    edited = {"text": "a b c"}
    await handle.signal(
        names.SIG_APPROVE, ApproveInput(approval_id=approval_id, by="eve", edited_arguments=edited)
    )
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def rules_over_never(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A tool marked ``approval = "never"`` with an ``approve_when`` rule: a call that
    meets the rule waits for approval (asked under ``vigil-rules-over-never``), and is
    run once approved; one that does not runs at once."""
    name = "agent-rules-over-never"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "tools": [
                    {
                        "name": "http_fetch",
                        "approval": "never",
                        "approve_when": [{"argument": "url", "matches": "/held$"}],
                    }
                ],
            }
        )
    )
    ctx.stub.enqueue(ctx.fetch("/open"), ctx.fetch("/held"), finish("fetched both"))
    handle = await ctx.start("rules_over_never", StartSessionInput(agent_id=name, goal="fetch"))
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    await handle.execute_update(
        names.UPD_APPROVE,
        ApproveInput(approval_id=waiting.pending_approvals[0].approval_id, by="ana"),
    )
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def finish_failed(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A fetch of a host outside the allowlist fails (a tool error back to the model); the
    model ends the session with finish's ``succeeded`` false: the session ends failed."""
    ctx.stub.enqueue(
        Reply.tool_call("http_fetch", {"url": "http://outside.invalid/report"}),
        Reply.tool_call(
            "finish",
            {"summary": "http_fetch failed: the host is not allowed", "succeeded": False},
        ),
    )
    handle = await ctx.start("finish_failed", _arg("fetch a page outside the allowlist"))
    _expect(await handle.result(), SessionStatus.FAILED)
    return [handle]


async def undecryptable_signal(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Waiting for approval, the session gets a message that only claims to be encrypted
    (as the plain `temporal` CLI sends it), a readable message, and an approval sealed
    with a key nobody has: the two it cannot decrypt are refused, each leaving its marker
    (the 1st and the 3rd signal); a readable approval then lets it finish."""
    ctx.stub.enqueue(ctx.fetch("/page"), finish("fetched after two refused signals"))
    handle = await ctx.start("undecryptable_signal", _arg("fetch", policy=ToolPolicy()))
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    approval = waiting.pending_approvals[0].approval_id
    claims = raw_json('{"text": "hi", "by": "x"}', encoding=ENCODING)
    await handle.signal(names.SIG_MESSAGE, claims)
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="a readable note", by="dave"))
    unknown_key = Payload(
        metadata={"encoding": ENCODING, META_KEY_ID: b"k-nobody-has"}, data=b"\x00" * 40
    )
    await handle.signal(names.SIG_APPROVE, RawValue(unknown_key))
    refused = await eventually(handle, lambda s: s.rejected_inputs == 2)
    assert [p.approval_id for p in refused.pending_approvals] == [approval], refused
    await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id=approval, by="alice"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def conversation(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A conversation (the session of a key): each text reply answers a message and the
    session waits for the next; one step per run, so the second run takes over the wait
    for a message; the third message is answered with finish. First and last run kept."""
    ctx.stub.enqueue(Reply.text("first answer"), Reply.text("second answer"), finish("bye"))
    handle = await ctx.start("conversation", _arg("serve", conversation=True, steps_per_run=1))
    for n, text in enumerate(("another question", "that is all"), start=1):
        await eventually(
            handle, lambda s, n=n: s.step == n and s.status == SessionStatus.WAITING_HUMAN
        )
        await handle.signal(names.SIG_MESSAGE, MessageInput(text=text, by="ana"))
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.runs >= 2, result
    first = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first, ctx.client.get_workflow_handle(handle.id)]


async def client_start(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Started by vigil's client, whose start carries the resolved definition: the first
    run reads none; one step per run, so the second run reads its pinned version itself."""
    name = "agent-client-start"
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": name,
                "system_prompt": "You are {agent}. Goal: {goal}",
                "model": {"execution": "local"},
                "tools": [{"name": "http_fetch"}, {"name": "finish"}],
            }
        )
    )
    ctx.stub.enqueue(ctx.fetch("/page"), finish("started by the client"))
    vigil = await VigilClient.connect(ctx.settings)
    try:
        started = await vigil.start_session(
            name,
            "start through the client",
            session_id=f"replay-client_start-{uuid.uuid4().hex[:8]}",
            policy=ToolPolicy(require_approval=[]),
            task_queue=ctx.task_queue,
            steps_per_run=1,
        )
    finally:
        await vigil.close()
    handle = ctx.client.get_workflow_handle(started.id)
    result = await ctx.client.get_workflow_handle_for(AgentSession.run, started.id).result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.runs >= 2, result
    # A handle got by id knows no run: the last run's start names the first.
    last = await handle.fetch_history()
    opened = last.events[0].workflow_execution_started_event_attributes
    first = ctx.client.get_workflow_handle(handle.id, run_id=opened.first_execution_run_id)
    return [first, handle]


async def conversation_idle(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A conversation with an idle time of 3 s: a message within it is answered (the
    idle clock starts again), then none comes and the session ends idle, completed."""
    ctx.stub.enqueue(Reply.text("first answer"), Reply.text("second answer"))
    arg = _arg("serve", conversation=True, conversation_idle_seconds=3)
    handle = await ctx.start("conversation_idle", arg)
    await eventually(handle, lambda s: s.step == 1 and s.status == SessionStatus.WAITING_HUMAN)
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="another question", by="ana"))
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.steps == 2 and "ended idle" in result.summary, result
    return [handle]


async def pause_holds_idle(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A conversation paused while it waits for a message: its idle time (2 s) passes
    under the pause, which holds it (PATCH_PAUSE_HOLDS_IDLE); resumed, it waits its idle
    time again and ends idle, completed."""
    ctx.stub.enqueue(Reply.text("first answer"))
    arg = _arg("serve", conversation=True, conversation_idle_seconds=2)
    handle = await ctx.start("pause_holds_idle", arg)
    await eventually(handle, lambda s: s.step == 1 and s.status == SessionStatus.WAITING_HUMAN)
    await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="reading it"))
    await eventually(handle, lambda s: s.status == SessionStatus.PAUSED, timeout=30)
    await handle.signal(names.SIG_RESUME, ResumeInput(by="bob"))
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert "ended idle" in result.summary, result
    return [handle]


async def conversation_late_message(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A conversation whose message comes while the model is still answering the goal:
    the next step answers it (the session does not wait for yet another message)."""
    ctx.stub.enqueue(Reply.hang(3.0, then=Reply.text("first answer")), Reply.text("late answer"))
    handle = await ctx.start("conversation_late_message", _arg("serve", conversation=True))
    await until(lambda: len(ctx.stub.requests) == 1)
    await handle.execute_update(names.UPD_MESSAGE, MessageInput(text="hurry up", by="ana"))
    await eventually(handle, lambda s: s.step == 2 and s.status == SessionStatus.WAITING_HUMAN)
    await handle.signal(names.SIG_MESSAGE, MessageInput(text="fine, bye", by="ana"))
    ctx.stub.enqueue(finish("bye"))
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.steps == 3, result
    return [handle]


async def message_at_the_end(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A message acknowledged while the model gives what would be its last answer: the
    session answers it in one more step (sessions from before ended without it)."""
    ctx.stub.enqueue(Reply.hang(3.0, then=Reply.text("all done")), Reply.text("noted"))
    handle = await ctx.start("message_at_the_end", _arg("tidy up"))
    await until(lambda: len(ctx.stub.requests) == 1)
    await handle.execute_update(names.UPD_MESSAGE, MessageInput(text="and the logs", by="ana"))
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    return [handle]


async def cancel_during_the_end(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A conversation that ended idle is cancelled while its last records wait for a lock
    on its row: the write is made again and the session completes as it ended."""
    ctx.stub.enqueue(Reply.text("hello"))
    arg = _arg("answer", conversation=True, conversation_idle_seconds=2.0)
    handle = await ctx.start("cancel_during_the_end", arg)
    url = ctx.settings.endpoints().database_url
    assert url is not None
    await eventually(handle, lambda s: s.status == SessionStatus.WAITING_HUMAN)
    async with session_row_held(ctx.sessionmaker, handle.id):
        await until(lambda: waiting_for_lock(url))
        await handle.cancel()
        await until(lambda: cancel_landed(handle), within=60)
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def input_at_the_end(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A conversation that ended idle gets a message and a pause signalled while its end's
    write waits: both refused, and recorded so."""
    handle = await _idle_conversation(ctx, "input_at_the_end")
    async with _end_waiting(ctx, handle):
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="are you there?", by="ana"))
        await handle.signal(names.SIG_PAUSE, PauseInput(by="bob", reason="lunch"))
        await until(lambda: signals_in_history(handle, 2), within=30)
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def end_of_a_refused_task(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A message signalled while a conversation's end is written, the write let go at
    once: Temporal refuses the task that wrote the end, the retry takes the message first,
    its write is refused (the record holds the end) and the session ends as recorded."""
    handle = await _idle_conversation(ctx, "end_of_a_refused_task")
    async with _end_waiting(ctx, handle):
        await handle.signal(names.SIG_MESSAGE, MessageInput(text="one more thing", by="ana"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def _idle_conversation(ctx: Ctx, name: str) -> WorkflowHandle[Any, Any]:
    """A conversation that answered once and waits for a message, to end idle in 6 s."""
    ctx.stub.enqueue(Reply.text("hello"), Reply.text("never sent"))
    arg = _arg("answer", conversation=True, conversation_idle_seconds=6.0)
    handle = await ctx.start(name, arg)
    await eventually(handle, lambda s: s.status == SessionStatus.WAITING_HUMAN)
    return handle


def _end_waiting(ctx: Ctx, handle: WorkflowHandle[Any, Any]) -> Any:
    """Entered once the session's end write waits on the end's event, held by the test."""
    url = ctx.settings.endpoints().database_url
    assert url is not None
    return end_write_waiting(ctx.sessionmaker, handle.id, "agent-replay", "completed", url)


async def redirect_queue_full(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Redirect signals sent while an approval waits, past the queue's size limit: the
    last ones are refused, as messages are."""
    policy = ToolPolicy(require_approval=["write_artifact"])
    ctx.stub.enqueue(
        Reply.tool_call("write_artifact", {"name": "a.md", "content": "a"}), finish("wrote it")
    )
    handle = await ctx.start("redirect_queue_full", _arg("write", policy=policy))
    await eventually(handle, lambda s: bool(s.pending_approvals))
    goal = "g" * (MAX_HUMAN_TEXT - 100)
    for n in range(MAX_QUEUED_BYTES // len(goal) + 2):
        await handle.signal(names.SIG_REDIRECT, RedirectInput(goal=f"{n} {goal}", by="eve"))
    await eventually(handle, lambda s: s.rejected_inputs >= 2)
    await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def _two_editions(ctx: Ctx, name: str) -> None:
    """Versions 1 and 2 of agent ``name``, each asking approval for http_fetch."""
    agents = AgentService(ctx.sessionmaker)
    for edition in ("first", "second"):
        await agents.apply_spec(
            AgentSpec.model_validate(
                {
                    "name": name,
                    "system_prompt": f"{edition} edition: {{goal}}",
                    "tools": [{"name": "http_fetch", "approval": "always"}],
                }
            )
        )


async def last_redirect_wins(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Redirects to version 2 and back to 1 while an approval waits: the session stays
    on version 1."""
    name = "agent-redirected"
    await _two_editions(ctx, name)
    ctx.stub.enqueue(ctx.fetch("/one"), finish("stayed"))
    arg = StartSessionInput(agent_id=name, goal="stay", agent_version=1)
    handle = await ctx.start("last_redirect_wins", arg)
    await eventually(handle, lambda s: bool(s.pending_approvals))
    for version in (2, 1):
        await handle.execute_update(
            names.UPD_REDIRECT, RedirectInput(goal="stay", by="ops", agent_version=version)
        )
    await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ops"))
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def redirect_back_during_move(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A redirect to version 2; once approved, while the session reads version 2 (held by
    a lock on the versions' table), a redirect back to version 1: the session moves to 2,
    then back to 1 (before: it stayed on 2)."""
    back = RedirectInput(goal="stay", by="ana", agent_version=1)
    return await _redirected_during_move(
        ctx, "redirect_back_during_move", "agent-redirected-back", ("move", "move"), back
    )


async def move_takes_later_goal(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A redirect to version 2; once approved, while the session reads version 2 (held by
    a lock on the versions' table), a redirect of the goal alone: the moved prompt holds
    that goal (asked under ``vigil-move-takes-later-goal``)."""
    plain = RedirectInput(goal="the third", by="ana")
    return await _redirected_during_move(
        ctx, "move_takes_later_goal", "agent-move-later-goal", ("the first", "the second"), plain
    )


async def _redirected_during_move(
    ctx: Ctx, scenario: str, name: str, goals: tuple[str, str], then: RedirectInput
) -> list[WorkflowHandle[Any, Any]]:
    """Agent ``name`` (two editions) started on version 1 with ``goals[0]``, redirected to
    version 2 with ``goals[1]``; once approved, while the session reads version 2, the
    redirect ``then``; it completes."""
    await _two_editions(ctx, name)
    ctx.stub.enqueue(ctx.fetch("/one"), finish("moved back" if then.agent_version else "moved"))
    arg = StartSessionInput(agent_id=name, goal=goals[0], agent_version=1)
    handle = await ctx.start(scenario, arg)
    url = ctx.settings.endpoints().database_url
    assert url is not None
    await eventually(handle, lambda s: bool(s.pending_approvals))
    await handle.execute_update(
        names.UPD_REDIRECT, RedirectInput(goal=goals[1], by="ops", agent_version=2)
    )
    async with ctx.sessionmaker() as db, db.begin():
        await db.execute(sql("LOCK TABLE agent_versions IN ACCESS EXCLUSIVE MODE"))
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ops"))
        await until(lambda: waiting_for_lock(url, "%agent_versions%"))
        await handle.execute_update(names.UPD_REDIRECT, then)
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def redirect_with_the_start(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A redirect to version 2 sent with the start (signal-with-start): handled before the
    run's code starts, it is taken and the session runs version 2."""
    return [await _redirected_at_start(ctx, "redirect_with_the_start", 2)]


async def redirect_to_its_own_version_at_start(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A redirect sent with the start that names the version the session starts on: taken,
    and no move (the definition read once)."""
    return [await _redirected_at_start(ctx, "redirect_to_its_own_version_at_start", 1)]


async def _redirected_at_start(ctx: Ctx, scenario: str, version: int) -> WorkflowHandle[Any, Any]:
    name = "agent-redirected-at-start"
    agents = AgentService(ctx.sessionmaker)
    for edition in ("first", "second"):
        await agents.apply_spec(
            AgentSpec.model_validate({"name": name, "system_prompt": f"{edition}: {{goal}}"})
        )
    ctx.stub.enqueue(finish(f"ran version {version}"))
    handle = await ctx.client.start_workflow(
        AgentSession.run,
        StartSessionInput(agent_id=name, goal="go", agent_version=1),
        id=f"replay-{scenario}-{uuid.uuid4().hex[:8]}",
        task_queue=ctx.task_queue,
        start_signal=names.SIG_REDIRECT,
        start_signal_args=[RedirectInput(goal="go on", by="ops", agent_version=version)],
    )
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return handle


async def wake_before_run(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A sleep handed over to a second run; with no worker running, that run is reset to
    its first task and a wake update sent: handled before the run's code starts, it ends
    the sleep the run took over. The reset run is recorded. The scenario runs its own
    worker on a queue of its own (it stops it midway)."""
    ctx.stub.enqueue(
        Reply.tool_call("wait_until", {"seconds": 3600, "reason": "settle"}), finish("woken")
    )
    queue = f"{ctx.task_queue}-own"
    arg = _arg("sleep, then be woken", max_history_bytes=SMALL_HISTORY)
    handle = await start(
        ctx.client, queue, arg, session_id=f"replay-wake_before_run-{uuid.uuid4().hex[:8]}"
    )
    async with running_worker(ctx.client, ctx.settings, queue):
        await eventually(handle, lambda s: s.status == SessionStatus.SLEEPING)
        await hand_over_while_waiting(handle)
        await first_task_completed(ctx.client, handle)
    await reset_to_first_task(ctx.client, handle)
    handle = ctx.client.get_workflow_handle_for(AgentSession.run, handle.id)  # the reset run
    # An update waits for a worker: sent first, it is in the run's first task.
    woken = asyncio.ensure_future(
        handle.execute_update(names.UPD_WAKE, WakeInput(by="carol"), result_type=Ack)
    )
    await asyncio.sleep(1.0)
    async with running_worker(ctx.client, ctx.settings, queue):
        await woken
        try:
            result = await asyncio.wait_for(handle.result(), 15)
        except TimeoutError:  # the code before forgot the wake: a second one ends the sleep
            await handle.execute_update(names.UPD_WAKE, WakeInput(by="carol"))
            result = await asyncio.wait_for(handle.result(), 60)
        _expect(result, SessionStatus.COMPLETED)
    return [handle]


async def cancel_at_the_start(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Cancelled before a worker first ran it (on a queue of its own, polled only after
    the cancel): the cancel lands while the run reads its agent; it ends cancelled, in the
    record too."""
    queue = f"{ctx.task_queue}-own"
    handle = await start(
        ctx.client,
        queue,
        _arg("never mind"),
        session_id=f"replay-cancel_at_the_start-{uuid.uuid4().hex[:8]}",
    )
    await handle.cancel()
    async with running_worker(ctx.client, ctx.settings, queue):
        try:
            await asyncio.wait_for(handle.result(), 60)
        except WorkflowFailureError:
            return [handle]
    raise AssertionError("the session was not cancelled")


async def tool_failed_for_good(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """A built-in tool given a 1 s limit fetches a page that takes 3 s: both attempts time
    out, the third gives up, and the call's error goes back to the model, asked under
    ``vigil-tool-failed-for-good``; the model finishes."""
    await AgentService(ctx.sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {
                "name": "agent-quick-fetch",
                "tools": [
                    {"name": "http_fetch", "timeout_seconds": 1, "max_attempts": 2},
                    {"name": "finish"},
                ],
            }
        )
    )
    ctx.stub.on_get = lambda path: time.sleep(3) if path == "/slow" else None
    ctx.stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{ctx.stub.url}/slow"}), finish("went on")
    )
    try:
        handle = await ctx.start(
            "tool_failed_for_good",
            StartSessionInput(
                agent_id="agent-quick-fetch",
                goal="fetch a slow page",
                policy=ToolPolicy(require_approval=[]),
            ),
        )
        _expect(await handle.result(), SessionStatus.COMPLETED)
    finally:
        ctx.stub.on_get = None
    return [handle]


async def named_requests(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Controls that name their request, each sent twice (an update and its signal, as a
    client does when the update goes unanswered; a signal twice): taken once each."""
    ctx.stub.enqueue(ctx.fetch("/draft"), finish("fetched after approval"))
    handle = await ctx.start("named_requests", _arg("fetch with approval", policy=ToolPolicy()))
    waiting = await eventually(handle, lambda s: bool(s.pending_approvals))
    approval = waiting.pending_approvals[0].approval_id
    pause = PauseInput(by="bob", reason="lunch", request_id="pause-1")
    await handle.execute_update(names.UPD_PAUSE, pause)
    await handle.signal(names.SIG_PAUSE, pause)
    said = MessageInput(text="also the final page", by="bob", request_id="say-1")
    await handle.signal(names.SIG_MESSAGE, said)
    await handle.signal(names.SIG_MESSAGE, said)
    again: Ack = await handle.execute_update(names.UPD_MESSAGE, said, result_type=Ack)
    assert again.accepted, again
    await handle.execute_update(names.UPD_RESUME, ResumeInput(by="bob", request_id="resume-1"))
    approve = ApproveInput(approval_id=approval, by="bob", request_id="approve-1")
    await handle.execute_update(names.UPD_APPROVE, approve)
    await handle.signal(names.SIG_APPROVE, approve)
    _expect(await handle.result(), SessionStatus.COMPLETED)
    return [handle]


async def named_requests_across_runs(ctx: Ctx) -> list[WorkflowHandle[Any, Any]]:
    """Named requests taken in the first run come again in the second (two steps a run):
    the ids taken travel with continue-as-new, so neither is taken twice."""
    ctx.stub.enqueue(ctx.fetch("/1"), ctx.fetch("/2"), ctx.fetch("/3"), finish("two runs"))
    handle = await ctx.start(
        "named_requests_across_runs",
        _arg("fetch three times with approval", policy=ToolPolicy(), steps_per_run=2),
    )

    async def approve_next(run: int) -> None:
        waiting = await eventually(
            handle, lambda s: s.run_index == run and bool(s.pending_approvals)
        )
        approval = waiting.pending_approvals[0].approval_id
        await handle.execute_update(names.UPD_APPROVE, ApproveInput(approval_id=approval, by="bob"))

    await eventually(handle, lambda s: bool(s.pending_approvals))
    said = MessageInput(text="also the final page", by="bob", request_id="say-1")
    pause = PauseInput(by="bob", reason="lunch", request_id="pause-1")
    await handle.signal(names.SIG_MESSAGE, said)
    await handle.execute_update(names.UPD_PAUSE, pause)
    await handle.execute_update(names.UPD_RESUME, ResumeInput(by="bob", request_id="resume-1"))
    await approve_next(1)
    await approve_next(1)  # the second step's call, then the run ends
    await eventually(handle, lambda s: s.run_index == 2 and bool(s.pending_approvals))
    await handle.signal(names.SIG_MESSAGE, said)
    await handle.signal(names.SIG_PAUSE, pause)
    again: Ack = await handle.execute_update(names.UPD_PAUSE, pause, result_type=Ack)
    assert again.accepted, again  # the first run's answer
    assert not (await state(handle)).paused  # not a second pause
    await approve_next(2)
    result = await handle.result()
    _expect(result, SessionStatus.COMPLETED)
    assert result.runs == 2, result
    first_run = ctx.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    return [first_run, ctx.client.get_workflow_handle(handle.id)]


SCENARIOS: dict[str, Callable[[Ctx], Awaitable[list[WorkflowHandle[Any, Any]]]]] = {
    "tools_finish": tools_finish,
    "approval_approve": approval_approve,
    "pause_resume": pause_resume,
    "continue_as_new": continue_as_new,
    "budget_exhausted": budget_exhausted,
    "wait_until": wait_until,
    "provider_rejected": provider_rejected,
    "hand_over_waiting": hand_over_waiting,
    "budgeted_retries": budgeted_retries,
    "agent_definition": agent_definition,
    "agent_python_mcp_tools": agent_python_mcp_tools,
    "transcript_ui": transcript_ui,
    "webhooks": webhooks,
    "cancel_by": cancel_by,
    "folded_step": folded_step,
    "local_model_calls": local_model_calls,
    "finish_failed": finish_failed,
    "undecryptable_signal": undecryptable_signal,
    "conversation": conversation,
    "client_start": client_start,
    "conversation_idle": conversation_idle,
    "pause_holds_idle": pause_holds_idle,
    "finite_edits": finite_edits,
    "batch_wait_step": batch_wait_step,
    "ask_after_queued": ask_after_queued,
    "move_takes_later_goal": move_takes_later_goal,
    "conversation_late_message": conversation_late_message,
    "message_at_the_end": message_at_the_end,
    "cancel_during_the_end": cancel_during_the_end,
    "redirect_queue_full": redirect_queue_full,
    "last_redirect_wins": last_redirect_wins,
    "redirect_back_during_move": redirect_back_during_move,
    "input_at_the_end": input_at_the_end,
    "end_of_a_refused_task": end_of_a_refused_task,
    "redirect_with_the_start": redirect_with_the_start,
    "redirect_to_its_own_version_at_start": redirect_to_its_own_version_at_start,
    "wake_before_run": wake_before_run,
    "cancel_at_the_start": cancel_at_the_start,
    "step_batches": step_batches,
    "default_step_batches": default_step_batches,
    "hand_back_with_input": hand_back_with_input,
    "hand_back_waits": hand_back_waits,
    "carried_provider_wait": carried_provider_wait,
    "late_approval": late_approval,
    "cancel_inside_a_batch": cancel_inside_a_batch,
    "local_call_moves": local_call_moves,
    "line_text_nul": line_text_nul,
    "whole_numbers": whole_numbers,
    "linear_patterns": linear_patterns,
    "rules_over_never": rules_over_never,
    "delivery_per_chain": delivery_per_chain,
    "pause_state_signals": pause_state_signals,
    "tool_failed_for_good": tool_failed_for_good,
    "named_requests": named_requests,
    "named_requests_across_runs": named_requests_across_runs,
    "runs_take_a_step": runs_take_a_step,
    "prompt_follows_goal": prompt_follows_goal,
    "prompt_follows_goal_across_runs": prompt_follows_goal_across_runs,
    "earlier_session_id": earlier_session_id,
}


def _expect(result: Any, status: SessionStatus) -> None:
    if result.status != status:
        raise AssertionError(f"expected {status.value}, got {result}")


def record(names_wanted: list[str]) -> list[Path]:
    """Record the scenarios on the test stack (started here, and stopped again, if needed)."""
    with scratch_stack(DATABASE) as settings:
        return asyncio.run(_record(settings, names_wanted))


async def _record(settings: Settings, names_wanted: list[str]) -> list[Path]:
    # Recorded histories are committed and replayed without keys: record them in plain.
    settings = settings.model_copy(update={"payload_encryption": False})
    client = await connect(settings)
    HISTORIES.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    url = settings.endpoints().database_url
    assert url is not None
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    try:
        await _record_all(client, settings, sessionmaker, names_wanted, written)
    finally:
        await engine.dispose()
    return written


async def _record_all(
    client: Client,
    settings: Settings,
    sessionmaker: async_sessionmaker[DbSession],
    names_wanted: list[str],
    written: list[Path],
) -> None:
    with LLMStub() as stub:
        cfg = stub_settings(
            settings,
            stub.url_openai,
            http_allow=stub.host_port,
            tool_modules="tests.support.py_tools",
            tool_entry_points=False,
            model_timeout_seconds=15.0,  # local_model_calls thinks for 9.5 s
            model_connections=json.dumps(
                {
                    "moving": {
                        "kind": "openai",
                        "base_url": stub.url_openai,
                        "model": "stub-model",
                        "credential": f"env:{MOVING_KEY}",
                    }
                }
            ),
        )
        for name in names_wanted:
            stub.clear()
            task_queue = f"replay-record-{uuid.uuid4()}"
            started = time.monotonic()
            async with running_worker(client, cfg, task_queue):
                handles = await SCENARIOS[name](Ctx(client, stub, task_queue, sessionmaker, cfg))
            for index, handle in enumerate(handles):
                suffix = "" if len(handles) == 1 else ("_first_run" if index == 0 else "_last_run")
                path = HISTORIES / f"{name}{suffix}.json"
                history = await handle.fetch_history()
                path.write_text(history.to_json() + "\n")
                written.append(path)
                print(
                    f"{path.relative_to(ROOT)}: {len(history.events)} events, "
                    f"{time.monotonic() - started:.1f}s"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Record AgentSession histories for replay.")
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"default: all of {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    # The provider_rejected scenario makes the worker log a failed activity on purpose.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    record(args.scenarios or list(SCENARIOS))


if __name__ == "__main__":
    sys.exit(main())
