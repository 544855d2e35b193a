"""An erasure waits (bounded) for Temporal to delete the runs it asked it to delete, says so
when that takes a while, and its receipt counts the runs Temporal was still deleting when
the wait ran out (their histories go shortly after; the record is erased either way). A
run that ended before is deleted within the wait too: the servers mark a run's close
processed every second (Temporal's default, 30 s, held its deletion up to that long)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support.sessions import forgotten_by_temporal, until
from vigil.activities.artifacts.store import FilesystemStore
from vigil.activities.erasure import Eraser

pytestmark = pytest.mark.integration


async def _running(client: Client) -> str:
    """A run Temporal holds under a new id (no worker takes it), once listed."""
    workflow_id = f"erase-wait-{uuid.uuid4().hex[:10]}"
    await client.start_workflow(
        "vigil-test-placeholder", id=workflow_id, task_queue=f"nobody-{uuid.uuid4().hex}"
    )

    async def listed() -> bool:
        return [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")] != []

    await until(listed, what="the run is listed")
    return workflow_id


async def test_a_run_temporal_has_not_deleted_by_the_end_of_the_wait_is_counted(
    sessionmaker: async_sessionmaker[DbSession], client: Client, tmp_path: Path
) -> None:
    told: list[int] = []
    impatient = Eraser(
        sessionmaker=sessionmaker,
        store=FilesystemStore(tmp_path),
        temporal=client,
        delete_wait_seconds=0,
    )
    workflow_id = await _running(client)
    receipt = await impatient.erase("session", workflow_id, by="test", waiting=told.append)
    assert receipt.counts["workflow_runs"] == 1
    assert receipt.counts["workflow_runs_still_deleting"] == 1
    assert told == []  # it did not wait
    await forgotten_by_temporal(client, workflow_id)  # Temporal deletes it all the same

    patient = Eraser(sessionmaker=sessionmaker, store=FilesystemStore(tmp_path), temporal=client)
    workflow_id = await _running(client)
    receipt = await patient.erase("session", workflow_id, by="test", waiting=told.append)
    assert receipt.counts["workflow_runs"] == 1
    assert "workflow_runs_still_deleting" not in receipt.counts
    # Told once, with the one run, if the deletion took over a second; else not at all.
    assert told in ([], [1])


async def test_a_run_that_ended_before_is_deleted_within_the_wait(
    sessionmaker: async_sessionmaker[DbSession], client: Client, tmp_path: Path
) -> None:
    eraser = Eraser(
        sessionmaker=sessionmaker,
        store=FilesystemStore(tmp_path),
        temporal=client,
        delete_wait_seconds=10,
    )
    workflow_id = await _running(client)
    await client.get_workflow_handle(workflow_id).terminate(reason="ended before")
    receipt = await eraser.erase("session", workflow_id, by="test")
    assert receipt.counts["workflow_runs"] == 1
    assert "workflow_runs_still_deleting" not in receipt.counts
