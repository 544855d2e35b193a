"""Helpers to run AgentSessions against the real test stack with a stubbed LLM."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, overload

from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyExcludeType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue
from temporalio.service import RPCError, RPCStatusCode

from vigil.activities.models.base import ModelProvider
from vigil.activities.record import store as record
from vigil.activities.record.store import SessionRow, StoredEvent, StoredMessage
from vigil.schema import names
from vigil.schema.agents import AgentSpec
from vigil.schema.payloads import MessageInput, SessionState, SessionStatus, StartSessionInput
from vigil.workers.agents import AgentService
from vigil.workers.settings import Settings
from vigil.workers.worker import build_worker, runtime
from vigil.workflows.constants import STEP_BATCH_MS
from vigil.workflows.session import AgentSession

T = TypeVar("T")


def stub_settings(
    settings: Settings, base_url: str, provider: str = "openai", **extra: Any
) -> Settings:
    return settings.model_copy(
        update={
            "model_provider": provider,
            "model_base_url": base_url,
            "model_name": "stub-model",
            "model_timeout_seconds": 5.0,
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, task_queue: str, provider: ModelProvider | None = None
) -> AsyncIterator[None]:
    async with runtime(settings, provider) as rt, build_worker(client, rt, task_queue):
        yield


async def start(
    client: Client, task_queue: str, arg: StartSessionInput, session_id: str | None = None
) -> WorkflowHandle[AgentSession, Any]:
    return await client.start_workflow(
        AgentSession.run,
        arg,
        id=session_id or f"test-session-{uuid.uuid4()}",
        task_queue=task_queue,
    )


STATE_RPC_TIMEOUT = timedelta(seconds=10)
"""A state query that gets no answer fails after this, rather than waiting for the test's
whole timeout without saying where it stopped."""


async def state(handle: WorkflowHandle[Any, Any]) -> SessionState:
    current: SessionState = await handle.query(
        names.QUERY_STATE, result_type=SessionState, rpc_timeout=STATE_RPC_TIMEOUT
    )
    return current


async def eventually(
    handle: WorkflowHandle[Any, Any],
    check: Callable[[SessionState], bool],
    timeout: float = 30,  # noqa: ASYNC109 - a polling budget, not a cancel scope
) -> SessionState:
    """Poll the state query until ``check`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    current: SessionState | None = None
    while True:
        try:
            current = await state(handle)
        except RPCError as err:
            # A query that timed out is asked again until the deadline; others fail.
            if err.status != RPCStatusCode.DEADLINE_EXCEEDED:
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"condition not met in {timeout}s: the state query got no answer "
                    f"({err}); last state: {current}"
                ) from err
            continue
        if check(current):
            return current
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last state: {current}")
        await asyncio.sleep(0.1)


# --- helpers for the session tests -------------------------------------------------------


async def local_agent(
    sessionmaker: async_sessionmaker[DbSession], tools: list[dict[str, Any]], **spec: Any
) -> str:
    """Define a new agent of the low-latency mode (``[model] execution = "local"``) with
    ``tools`` and any other fields of its ``spec``; returns its name."""
    name = f"local-{uuid.uuid4().hex[:8]}"
    await AgentService(sessionmaker).apply_spec(
        AgentSpec.model_validate(
            {"name": name, "model": {"execution": "local"}, "tools": tools, **spec}
        )
    )
    return name


def session_input(
    goal: str = "do the thing", *, agent_id: str = "agent-test", **fields: Any
) -> StartSessionInput:
    """A StartSessionInput with test defaults; ``fields`` are StartSessionInput fields."""
    return StartSessionInput(agent_id=agent_id, goal=goal, **fields)


REFUSED_TEXT = "r" * 60_000
"""A message over the 32 KiB text limit: refused, but written into the history."""


async def hand_over_while_waiting(handle: WorkflowHandle[Any, Any]) -> SessionState:
    """Send refused signals until a waiting session (started with a small
    ``max_history_bytes``) has continued-as-new; returns its state in the new run."""
    before = await state(handle)
    for _ in range(20):
        await handle.signal(names.SIG_MESSAGE, MessageInput(text=REFUSED_TEXT, by="mallory"))
        try:
            return await eventually(handle, lambda s: s.run_index > before.run_index, 2)
        except AssertionError:
            continue
    raise AssertionError(f"no hand-over after 20 refused signals: {await state(handle)}")


async def first_task_completed(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
    """Wait until the session's current run has completed a workflow task (a run that
    just took over is answering queries before its first task is in its history)."""

    async def completed() -> bool:
        run_id = (await handle.describe()).run_id
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        return any(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events
        )

    await until(completed, within=30, what="the current run's first task completed")


async def reset_to_first_task(client: Client, handle: WorkflowHandle[Any, Any]) -> str:
    """Reset the session's current run to its first workflow task (no worker may be
    running; the run has completed one: ``first_task_completed``); returns the new run's
    id."""
    run_id = (await handle.describe()).run_id
    history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
    first_done = next(
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    )
    reset = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=run_id),
            reason="input before the run (test)",
            workflow_task_finish_event_id=first_done,
            request_id=str(uuid.uuid4()),
            # Only what the test sends next reaches the new run's first task.
            reset_reapply_exclude_types=[
                ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_SIGNAL,
                ResetReapplyExcludeType.RESET_REAPPLY_EXCLUDE_TYPE_UPDATE,
            ],
        )
    )
    return reset.run_id


async def wait_status(
    handle: WorkflowHandle[Any, Any], status: SessionStatus, within: float = 30
) -> SessionState:
    return await eventually(handle, lambda s: s.status == status, within)


async def outlast_step_batch() -> None:
    """Wait past a step batch's default window. A test that holds a default-mode model
    call, sends input, then lets the call go: the call has then run longer than the
    window, as a real model's does, so it takes no further step in its batch and the
    input lands before the next step (a quicker release may see the call go on to the
    next step first, which is what step batches do)."""
    await asyncio.sleep(STEP_BATCH_MS / 1000 + 0.1)


@overload
async def until(
    probe: Callable[[], Awaitable[T | None]], within: float = 30, what: str = ""
) -> T: ...
@overload
async def until(probe: Callable[[], T | None], within: float = 30, what: str = "") -> T: ...
async def until(probe: Callable[[], Any], within: float = 30, what: str = "") -> Any:
    """Poll a probe (sync or async) until it returns something truthy, and return that."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not met in {within}s: {what or probe}; last: {value!r}")
        await asyncio.sleep(0.1)


async def transcript(
    sessionmaker: async_sessionmaker[DbSession], session_id: str
) -> list[StoredMessage]:
    """The whole transcript from PostgreSQL, oldest first."""
    out: list[StoredMessage] = []
    async with sessionmaker() as db:
        while True:
            page = await record.messages_page(db, session_id, after_seq=out[-1].seq if out else -1)
            if not page:
                return out
            out.extend(page)


async def events(
    sessionmaker: async_sessionmaker[DbSession], session_id: str, kind: str | None = None
) -> list[StoredEvent]:
    async with sessionmaker() as db:
        return await record.list_events(db, session_id, kind=kind)


async def session_row(sessionmaker: async_sessionmaker[DbSession], session_id: str) -> SessionRow:
    async with sessionmaker() as db:
        row = await record.get_session(db, session_id)
    assert row is not None, f"no sessions row for {session_id}"
    return row


def raw_json(data: bytes | str, encoding: bytes = b"json/plain") -> RawValue:
    """A payload sent exactly as given (bypassing the client's converter)."""
    body = data.encode() if isinstance(data, str) else data
    return RawValue(Payload(metadata={"encoding": encoding}, data=body))


def tool_messages(messages: list[StoredMessage]) -> list[StoredMessage]:
    return [m for m in messages if m.role == "tool"]


def assert_whole(messages: list[StoredMessage]) -> None:
    """seq 0..N without gap or duplicate, every assistant tool call answered by its result."""
    assert [m.seq for m in messages] == list(range(len(messages))), [m.seq for m in messages]
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    asked = [c["id"] for m in messages if m.role == "assistant" for c in (m.tool_calls or [])]
    assert len(asked) == len(set(asked)), "duplicate tool call ids"
    missing = [cid for cid in asked if cid not in answered]
    assert not missing, f"tool calls without a result: {missing}"
    for i, m in enumerate(messages):
        if m.role == "assistant" and m.tool_calls:
            ids = [c["id"] for c in m.tool_calls]
            following = [x.tool_call_id for x in messages[i + 1 : i + 1 + len(ids)]]
            assert following == ids, f"results of seq {m.seq} do not follow it: {following}"


def user_texts(request_body: Any) -> list[str]:
    """The user messages' content of one recorded OpenAI request."""
    return [m.get("content") or "" for m in request_body["messages"] if m["role"] == "user"]


async def approval_pending(
    handle: WorkflowHandle[Any, Any],
    sessionmaker: async_sessionmaker[DbSession],
    approval_id: str = "a1-0",
) -> SessionState:
    """Wait until the session waits for ``approval_id`` and the request is in PostgreSQL."""
    st = await eventually(
        handle, lambda s: any(p.approval_id == approval_id for p in s.pending_approvals)
    )
    key = f"approval:{approval_id}:requested"

    async def recorded() -> bool:
        requested = await events(sessionmaker, handle.id, "approval_requested")
        return any(e.key == key for e in requested)

    await until(recorded, what=f"{key} in events")
    return st


async def forgotten_by_temporal(
    client: Client,
    session_id: str,
    within: float = 60,
) -> None:
    """Wait until Temporal no longer knows ``session_id`` (it deletes runs in the
    background, after an erasure has asked it to)."""
    handle = client.get_workflow_handle(session_id)
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        try:
            await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(0.2)
    raise AssertionError(f"Temporal still holds {session_id} after {within} s")
