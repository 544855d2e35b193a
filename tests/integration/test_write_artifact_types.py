"""The `write_artifact` tool keeps what the model writes under the media type its name
says, as an upload of the same name is kept: `report.md` was `text/plain` written by the
tool and `text/markdown` uploaded through the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.artifacts.registry import list_artifacts, type_of_name
from vigil.activities.record import store as record
from vigil.activities.session import SessionActivities
from vigil.activities.tools import registry as tools
from vigil.workers.settings import Settings
from vigil.workers.worker import runtime

pytestmark = pytest.mark.integration


@pytest.fixture
async def acts(settings: Settings) -> AsyncIterator[SessionActivities]:
    async with runtime(settings) as rt:
        yield rt.activities


@pytest.mark.parametrize(
    ("name", "given", "kept"),
    [
        ("report.md", None, "text/markdown; charset=utf-8"),
        ("data.json", None, "application/json; charset=utf-8"),
        ("table.csv", None, "text/csv; charset=utf-8"),
        ("notes", None, "text/plain; charset=utf-8"),
        ("picture.png", None, "text/plain; charset=utf-8"),  # text, whatever its name
        ("report.md", "text/x-mine", "text/x-mine"),  # the model's own word wins
    ],
)
async def test_written_text_is_kept_under_its_names_type(
    acts: SessionActivities,
    sessionmaker: async_sessionmaker[DbSession],
    name: str,
    given: str | None,
    kept: str,
) -> None:
    agent, session_id = f"agent-{uuid.uuid4()}", f"s-{uuid.uuid4()}"
    async with sessionmaker.begin() as db:
        await record.create_session(
            db, session_id=session_id, agent_id=agent, goal="g", status="running"
        )
    ctx = tools.BuiltinContext(
        session_id=session_id,
        agent_id=agent,
        step=1,
        call_index=0,
        settings=acts.settings,
        store=acts.store,
        sessionmaker=acts.sessionmaker,
        http=acts.http,
        memory=acts.memory,
    )
    args = {"name": name, "content": "# the tides\n"} | ({"mime_type": given} if given else {})
    await tools.write_artifact(ctx, args)
    (ref,) = await list_artifacts(sessionmaker, agent_id=agent, session_id=session_id)
    assert ref.mime_type == kept
    if given is None and kept != "text/plain; charset=utf-8":
        assert kept.startswith(type_of_name(name))  # as an upload of that name is kept
