"""Readers that keep the agent definitions they read (the worker's, and vigil's client in
a long-lived starter such as the API) read one again only when it changed: a new version,
or an agent erased and defined again, whose versions start over at 1 with another
content. Versions never change, so a version number alone told them apart until an
erasure: after one, the worker kept running the erased definition."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.agents.runtime import AgentVersions
from vigil.schema.agents import AgentSpec
from vigil.workers.agents import AgentService, KnownVersions

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
