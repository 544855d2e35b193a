"""A Python tool's own heartbeat keeps what the call's earlier attempts left (activities/guard.py).

A regular activity's ledger (the outages ridden out, the attempts cut off by a worker's
shutdown) travels to its next attempt in its heartbeat details. ``ToolContext.heartbeat``
sent the tool's details alone, so a tool that heartbeat during a call that had met an
outage erased the ledger: the next attempt counted the outage's attempts as failures and
could give up a call that had failed no time at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel
from temporalio.testing import ActivityEnvironment

from vigil.activities.guard import Ledger, guarded
from vigil.activities.tools.python import ToolContext


class Call(BaseModel):
    session_id: str = "s-1"
    agent_id: str = "a-1"
    max_failures: int = 1


class Owner:
    @guarded
    async def run_tool(self, arg: Call) -> str:
        context = ToolContext(
            session_id=arg.session_id,
            agent_id=arg.agent_id,
            step=1,
            tool="slow",
            call_id="c-1",
            idempotency_key="k",
            attempt=3,
        )
        context.heartbeat({"done": 40})
        context.heartbeat()
        return "ok"


async def test_a_tools_heartbeat_carries_the_calls_ledger_and_its_own_details() -> None:
    env = ActivityEnvironment()
    # Attempt 3: the two before it met an outage and were not failures.
    env.info = dataclasses.replace(
        env.info, attempt=3, heartbeat_details=[{"outages": 2, "streak": 2, "part": "postgres"}]
    )
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    assert await env.run(Owner().run_tool, Call()) == "ok"

    assert len(beats) == 2, beats
    with_details, bare = beats
    assert Ledger.from_details(with_details).outages == 2, with_details
    assert with_details[1:] == ({"done": 40},), with_details
    assert Ledger.from_details(bare).outages == 2, bare
