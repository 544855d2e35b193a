"""Readers that keep the agent definitions they read (the worker's, and vigil's client in
a long-lived starter such as the API) read one again only when it changed: a new version,
or an agent whose versions were removed and defined again at the same numbers with another
content (an erasure before 2026-12-07; since then an erased agent's versions number on).
Versions never change, so a version number alone told them apart until an erasure: after
one, the worker kept running the erased definition."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from vigil.activities.agents.runtime import AgentActivities, AgentVersions
from vigil.schema.agents import AgentSpec, ResolveAgentInput
from vigil.workers.agents import AgentService, KnownVersions
from vigil.workers.client import VigilClient
from vigil.workers.governance import Governance, Subject
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


def _spec(name: str, prompt: str) -> AgentSpec:
    return AgentSpec.model_validate({"name": name, "system_prompt": f"{prompt} Goal: {{goal}}"})


async def _erase_versions(sessionmaker: async_sessionmaker[DbSession], name: str) -> None:
    """What an agent's erasure does to its versions (as record maintenance, which the
    table's immutability trigger lets delete them)."""
    async with sessionmaker() as db, db.begin():
        await db.execute(text("SET LOCAL vigil.record_maintenance = 'on'"))
        await db.execute(text("DELETE FROM agent_versions WHERE agent_id = :a"), {"a": name})


async def test_a_starter_reads_a_definition_again_only_when_it_changed(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    service = AgentService(sessionmaker)
    starter = AgentService(sessionmaker, known=KnownVersions(sessionmaker))
    name = f"known-{uuid.uuid4().hex[:8]}"
    assert await starter.find(name) is None

    await service.apply_spec(_spec(name, "First."))
    first = await starter.find(name)
    assert first is not None and first.version == 1
    assert await starter.find(name) is first  # unchanged: what it read before

    # Erased and defined again while the starter held version 1: version 1 again.
    await _erase_versions(sessionmaker, name)
    await service.apply_spec(_spec(name, "Again."))
    again = await starter.find(name)
    assert again is not None and again.version == 1
    assert again.spec.system_prompt == "Again. Goal: {goal}"

    await service.apply_spec(_spec(name, "Second."))
    second = await starter.find(name)
    assert second is not None and second.version == 2
    assert second.spec.system_prompt == "Second. Goal: {goal}"
    assert await starter.find(name) is second

    await _erase_versions(sessionmaker, name)
    assert await starter.find(name) is None


async def test_the_worker_reads_an_agent_erased_and_defined_again_anew(
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    service = AgentService(sessionmaker)
    versions = AgentVersions(sessionmaker)
    name = f"known-{uuid.uuid4().hex[:8]}"
    await service.apply_spec(_spec(name, "Before."))
    before = await versions.newest(name)
    assert before is not None and before.version == 1
    assert versions.spec(before).system_prompt == "Before. Goal: {goal}"

    await _erase_versions(sessionmaker, name)
    await service.apply_spec(_spec(name, "After."))
    after = await versions.newest(name)
    assert after is not None and after.version == 1
    assert after.content_hash != before.content_hash
    assert after.spec["system_prompt"] == "After. Goal: {goal}"
    # What the worker derives from a version (its validated definition) follows too.
    assert versions.spec(after).system_prompt == "After. Goal: {goal}"


async def test_an_agent_erased_and_defined_again_numbers_its_versions_on(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A worker kept every version it read by agent and number. Erased and defined
    again, the agent's versions started over at 1, and a session of the new version 1
    (started by vigil's client, which carries the definition: the worker read nothing
    anew) got the worker's kept copy of the erased one: its tools and MCP servers for
    its calls, its webhooks for its events. Versions now number on past the erased ones,
    and a version a session moves to is read from the record, not from the copy."""
    service = AgentService(sessionmaker)
    versions = AgentVersions(sessionmaker)
    name = f"erased-{uuid.uuid4().hex[:8]}"
    first = AgentSpec.model_validate(
        {"name": name, "system_prompt": "Erased.", "tools": [{"name": "http_fetch"}]}
    )
    await service.apply_spec(first)
    await service.apply_spec(_spec(name, "Erased too."))
    kept = await versions.get(name, 1)
    assert kept is not None and "http_fetch" in await versions.catalog(name, 1)

    client = await VigilClient.connect(settings)
    try:
        await Governance(client).erase(Subject("agent", name), by="test", reason=None)
    finally:
        await client.close()
    await service.apply_spec(_spec(name, "After."))
    after = await versions.newest(name)
    assert after is not None and after.version == 3, "numbered past the two erased"
    assert versions.spec(after).system_prompt == "After. Goal: {goal}"
    assert "http_fetch" not in await versions.catalog(name, 3)
    # A session moving to an erased version (a redirect naming it) finds none.
    assert await versions.get(name, 1, fresh=True) is None
    with pytest.raises(ApplicationError, match="no version 1"):
        await ActivityEnvironment().run(
            AgentActivities(versions).resolve_agent,
            ResolveAgentInput(session_id="s", agent_id=name, version=1, goal="g"),
        )
    # ... and what the worker kept of it is gone.
    assert await versions.get(name, 1) is None
