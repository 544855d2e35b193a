"""Deliberately incompatible versions of AgentSession, registered under its name.

Replaying the committed histories with these must fail as nondeterministic: they prove the
replay test would catch a change that breaks running sessions. Import-light on purpose:
the workflow sandbox re-imports this module.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

from vigil.schema import names
from vigil.schema.payloads import SessionResult, StartSessionInput
from vigil.workflows.session import AgentSession, M

# Temporal wants the @workflow.run method declared on each workflow class itself, so each
# variant repeats it.


@workflow.defn(name=names.WORKFLOW_SESSION)
class TimerBeforeEachStep(AgentSession):
    """Sleeps a moment before every model call: a timer where history has an activity."""

    @workflow.run
    async def run(self, arg: StartSessionInput) -> SessionResult:
        return await super().run(arg)

    async def _step(self) -> None:
        await workflow.sleep(timedelta(milliseconds=1))
        await super()._step()


@workflow.defn(name=names.WORKFLOW_SESSION)
class RenamedRecordActivity(AgentSession):
    """Writes the session's records with an activity of another name."""

    @workflow.run
    async def run(self, arg: StartSessionInput) -> SessionResult:
        return await super().run(arg)

    async def _act(self, name: str, arg: BaseModel, result: type[M], **kwargs: Any) -> M:
        if name == names.ACT_RECORD:
            name = "vigil.record_v2"
        return await super()._act(name, arg, result, **kwargs)


INCOMPATIBLE: list[type[AgentSession]] = [TimerBeforeEachStep, RenamedRecordActivity]


@workflow.defn(name=names.WORKFLOW_SESSION)
class RandomBeforeEachStep(AgentSession):
    """Draws from Python's own random generator before every model call: the same events
    as the history, but a call only the sandbox stops (workers run without it)."""

    @workflow.run
    async def run(self, arg: StartSessionInput) -> SessionResult:
        return await super().run(arg)

    async def _step(self) -> None:
        random.random()
        await super()._step()
