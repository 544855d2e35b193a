"""Out-of-range budgets and waits: refused at start by vigil's faces, never a stuck session.

The API answers 422 and `vigil start` exits 2 for a wall-clock budget beyond 100 years, a
number that is not finite, a count past 2**53 or an approval timeout past 100 years. A
session started another way (a plain Temporal client or the `temporal` CLI, which check
nothing) with such numbers still runs to a recorded end: a time past the year 9999 (or
not a number) counts as the end of 9999, a deadline without a time zone as UTC, a
heartbeat that is no positive finite number of seconds as none (see workflows/times.py).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.common import RawValue

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer
from tests.support.api_sessions import api_for, define
from tests.support.llm_stub import LLMStub, Reply
from tests.support.sessions import (
    approval_pending,
    eventually,
    running_worker,
    session_input,
    session_row,
    stub_settings,
    transcript,
)
from vigil.schema import names
from vigil.schema.payloads import ApproveInput, SessionResult, SessionStatus
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope
from vigil.workflows.times import LATEST

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cli: CLIStack) -> Iterator[ApiServer]:
    with api_for(cli) as server:
        yield server


def test_the_api_refuses_out_of_range_budgets(cli: CLIStack, api: ApiServer) -> None:
    with api.client(api.token(Scope.ADMIN)) as http:
        agent = define(http, "ranges")
        refused: list[tuple[str, str]] = [
            ('{"max_seconds": 1e12}', "max_seconds"),
            ('{"max_seconds": 1e400}', "max_seconds"),
            ('{"max_seconds": Infinity}', "max_seconds"),
            ('{"max_seconds": NaN}', "max_seconds"),
            ('{"max_cost_usd": Infinity}', "max_cost_usd"),
            ('{"max_steps": 100000000000000000000}', "max_steps"),
            ('{"max_tokens": 100000000000000000000}', "max_tokens"),
        ]
        for budget, field in refused:
            body = f'{{"agent": "{agent}", "goal": "x", "budget": {budget}}}'
            r = http.post(
                "/v1/sessions", content=body, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, (budget, r.status_code, r.text)
            assert field in r.text, (budget, r.text)
        # The largest accepted wall-clock budget starts a session.
        ok = http.post(
            "/v1/sessions",
            json={
                "agent": agent,
                "goal": cli.plan(Reply.text("done")),
                "budget": {"max_seconds": 100 * 365 * 24 * 3600},
            },
        )
        assert ok.status_code == 201, ok.text


def test_vigil_start_refuses_out_of_range_budgets(cli: CLIStack) -> None:
    for option, value in (
        ("--max-seconds", "1e12"),
        ("--max-seconds", "inf"),
        ("--max-seconds", "nan"),
        ("--max-cost", "inf"),
        ("--max-steps", str(2**60)),
        # Refused by the budget's check ("not positive"), as the help says.
        ("--max-seconds", "-5"),
        ("--max-cost", "0"),
    ):
        done = cli.vigil("start", "x", "--agent", "ranges-cli", option, value, "--json")
        assert done.returncode == 2, (option, value, done.stdout, done.stderr)
        error = json.loads(done.stderr.strip().splitlines()[-1])["error"]
        assert error["code"] == "bad_input", (option, value, error)
        assert "budget" in error["message"] or option in error["message"], error


def _raw_input(goal: str, **changes: Any) -> RawValue:
    """A start input as JSON the way any Temporal client may send it: unchecked numbers
    (NaN and Infinity as Python's json writes them), a deadline without a time zone."""
    doc = session_input(goal).model_dump(mode="json")
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = doc
        for part in path:
            target = target.setdefault(part, {})
        target[last] = value
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(doc).encode()))


# (start input changes, the status the session ends with)
OUT_OF_RANGE: list[tuple[dict[str, Any], SessionStatus]] = [
    ({"budget__max_seconds": 1e12}, SessionStatus.COMPLETED),
    ({"budget__max_seconds": 1e300}, SessionStatus.COMPLETED),
    ({"budget__max_seconds": math.inf}, SessionStatus.COMPLETED),
    ({"budget__max_seconds": math.nan}, SessionStatus.COMPLETED),
    ({"budget__max_seconds": -1e300}, SessionStatus.TIMED_OUT),
    ({"budget__deadline": "2999-01-01T00:00:00"}, SessionStatus.COMPLETED),
    ({"budget__deadline": "2001-01-01T00:00:00"}, SessionStatus.TIMED_OUT),
    ({"budget__deadline": "9999-12-31T23:59:59Z"}, SessionStatus.COMPLETED),
    ({"policy__approval_timeout_seconds": 1e300}, SessionStatus.COMPLETED),
    ({"policy__approval_timeout_seconds": math.nan}, SessionStatus.COMPLETED),
    ({"heartbeat_seconds": 1e300}, SessionStatus.COMPLETED),
    ({"heartbeat_seconds": -5}, SessionStatus.COMPLETED),
    ({"heartbeat_seconds": math.nan}, SessionStatus.COMPLETED),
]


@pytest.mark.parametrize(
    ("changes", "ends"), OUT_OF_RANGE, ids=[json.dumps(c) for c, _ in OUT_OF_RANGE]
)
async def test_a_session_started_with_out_of_range_numbers_runs_to_a_recorded_end(
    changes: dict[str, Any],
    ends: SessionStatus,
    client: Client,
    settings: Settings,
    task_queue: str,
    sessionmaker: async_sessionmaker[DbSession],
) -> None:
    with LLMStub() as stub:
        stub.enqueue(
            Reply.tool_call("http_fetch", {"url": f"{stub.url}/page"}),
            Reply.tool_call("finish", {"summary": "done"}),
        )
        cfg = stub_settings(settings, stub.url_openai, http_allow=stub.host_port)
        async with running_worker(client, cfg, task_queue):
            handle = await client.start_workflow(
                names.WORKFLOW_SESSION,
                _raw_input("fetch the page", **changes),
                id=f"test-session-{uuid.uuid4()}",
                task_queue=task_queue,
                result_type=SessionResult,
            )
            if ends == SessionStatus.COMPLETED:
                await approval_pending(handle, sessionmaker)
                st = await eventually(handle, lambda s: s.status == SessionStatus.WAITING_APPROVAL)
                (pending,) = st.pending_approvals
                assert pending.expires_at.tzinfo is not None
                if "policy__approval_timeout_seconds" in changes:
                    assert pending.expires_at == LATEST
                await handle.signal(names.SIG_APPROVE, ApproveInput(approval_id="a1-0", by="alice"))
            result: SessionResult = await handle.result()
    assert result.status == ends, result
    row = await session_row(sessionmaker, handle.id)
    assert row.status == ends.value
    if ends == SessionStatus.TIMED_OUT:
        assert result.summary == "the session's deadline passed"
        assert not stub.requests
    else:
        messages = await transcript(sessionmaker, handle.id)
        assert any(m.role == "tool" and m.content for m in messages)
