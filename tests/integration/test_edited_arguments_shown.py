"""A call run with arguments a human edited shows those arguments everywhere a person looks.

The transcript (what `show`, `follow` and `export` print), the tool_call record, and the
run_tool activity's summary in Temporal (what `history` and Temporal UI show) all carry
the arguments that ran, say that a human edited them, and by whom.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    events,
    running_worker,
    session_input,
    start,
    stub_settings,
    tool_messages,
    transcript,
)
from vigil.schema import names
from vigil.schema.payloads import Ack, ApproveInput, SessionStatus
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


async def test_edited_arguments_are_what_every_view_shows(
    client: Client,
    settings: Settings,
    task_queue: str,
    stub: LLMStub,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    original = {"url": f"{stub.url}/original"}
    edited = {"url": f"{stub.url}/edited"}
    stub.enqueue(Reply.tool_call("http_fetch", original), Reply.tool_call("finish", {}))
    cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
    async with running_worker(client, cfg, task_queue):
        handle = await start(client, task_queue, session_input("fetch a page"))
        await approval_pending(handle, sessionmaker)
        await handle.execute_update(
            names.UPD_APPROVE,
            ApproveInput(approval_id="a1-0", by="alice", edited_arguments=edited),
            result_type=Ack,
        )
        assert (await handle.result()).status == SessionStatus.COMPLETED

    # The transcript (show, follow, export print it): the tool's message says it.
    fetched = tool_messages(await transcript(sessionmaker, handle.id))[0]
    assert fetched.name == "http_fetch"
    first_line = fetched.content.splitlines()[0]
    assert "edited by alice" in first_line and "/edited" in first_line, first_line
    assert "GET /edited" in fetched.content
    # The model is told too: its next request holds the same message.
    assert "edited by alice" in stub.requests[1].body["messages"][-1]["content"]

    # The record: the arguments that ran, the model's original ones, the editor.
    (call,) = [
        e
        for e in await events(sessionmaker, handle.id, "tool_call")
        if e.payload["tool"] != "finish"
    ]
    assert call.payload["arguments"] == edited
    assert call.payload["original_arguments"] == original
    assert call.payload["edited"] is True and call.payload["edited_by"] == "alice"

    vigil = await VigilClient.connect(settings)
    try:
        # `vigil history` (and Temporal UI): the run_tool activity's summary.
        lines = await vigil.history(handle.id)
        tool_lines = [ln.detail for ln in lines if ln.detail.startswith(names.ACT_RUN_TOOL)]
        assert any("/edited" in d and "edited by alice" in d for d in tool_lines), tool_lines
        assert not any("/original" in d for d in tool_lines), tool_lines
        # Who sent the update, on its history line.
        assert f"{names.UPD_APPROVE} by alice" in [ln.detail for ln in lines]
        # `vigil export`, both formats.
        md = "".join([chunk async for chunk in vigil.export(handle.id, "md")])
        assert "edited by alice" in md and "/edited" in md
        rows = [
            json.loads(line)
            for line in "".join([c async for c in vigil.export(handle.id, "jsonl")]).splitlines()
        ]
        assert any("edited by alice" in (r.get("content") or "") for r in rows)
    finally:
        await vigil.close()
