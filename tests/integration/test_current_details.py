"""Temporal UI's current details of a waiting session show the pending approval: the
tool, its arguments, the approval id and how to decide it (vigil's CLI and the plain
`temporal` CLI); `vigil history` shows the wait's timer summary."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowHandle

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    running_worker,
    session_input,
    start,
    stub_settings,
    until,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, ApproveInput, SessionStatus
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def _details(handle: WorkflowHandle[Any, Any]) -> str:
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return meta.current_details


async def test_details_show_the_pending_approval_and_how_to_decide_it(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(
        Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}, content="Let me look."),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch the page"))
        await approval_pending(handle, sessionmaker)
        details = await _details(handle)
        assert "waiting_approval" in details and "Let me look." in details
        assert "`a1-0`" in details and "`http_fetch`" in details and "/page" in details
        assert f"vigil approve {handle.id} a1-0" in details
        assert f"temporal workflow signal --namespace default --workflow-id {handle.id}" in details
        assert '--name approve --input \'{"approval_id": "a1-0"' in details

        vigil = await VigilClient.connect(settings)
        try:

            async def timer_line() -> str | None:
                lines = await vigil.history(handle.id)
                found = [ln.detail for ln in lines if ln.kind == "timer_started"]
                return next((d for d in found if "waiting for approval a1-0" in d), None)

            assert "http_fetch" in await until(timer_line, what="the approval timer's summary")
        finally:
            await vigil.close()

        await handle.execute_update(
            names.UPD_APPROVE, ApproveInput(approval_id="a1-0", by="ana"), result_type=Ack
        )
        assert (await handle.result()).status == SessionStatus.COMPLETED
        # The model's words of the step show in the summary of the tool call that followed.
        vigil = await VigilClient.connect(settings)
        try:
            lines = await vigil.history(handle.id)
        finally:
            await vigil.close()
        tools = [ln.detail for ln in lines if ln.detail.startswith(names.ACT_RUN_TOOL)]
        assert any('model said: "Let me look."' in d for d in tools), tools


async def test_the_temporal_command_names_the_address_the_session_was_started_through(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    stub.enqueue(Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}))
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    vigil = await VigilClient.connect(settings)
    try:
        arg = vigil.start_input("agent-test", "fetch the page")
        address = settings.endpoints().temporal_address
        assert arg.temporal_address == address
        async with running_worker(client, cfg, task_queue):
            handle = await start(client, task_queue, arg)
            await approval_pending(handle, sessionmaker)
            details = await _details(handle)
            assert (
                f"""--input '{{"approval_id": "a1-0", "by": "YOUR_NAME"}}' --address {address}`"""
                in details
            )
            await handle.cancel()
    finally:
        await vigil.close()
