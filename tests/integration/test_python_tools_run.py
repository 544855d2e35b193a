"""Python tools run by ``vigil.run_tool`` on a real Temporal worker: results recorded,
bad arguments, timeouts, exceptions and retries as tool errors, a stable idempotency key,
the artifact store, and a tool this worker does not offer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.client import Client

from tests.support import py_tools
from tests.support.sessions import events
from tests.support.tool_calls import ToolCaller, model_asked, recorded, tool_caller
from vigil.activities.artifacts.registry import get_artifact
from vigil.schema import names
from vigil.schema.agents import ToolDescriptor
from vigil.workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def caller(client: Client, settings: Settings) -> AsyncIterator[ToolCaller]:
    with_tools = settings.model_copy(update={"tool_modules": "tests.support.py_tools"})
    async with tool_caller(client, with_tools, "tq-pytools-" + settings.task_queue) as c:
        yield c


async def test_a_result_is_recorded_with_its_data(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    call = await model_asked(
        sessionmaker, "word_count", {"text": "a bb\nccc"}, tool=py_tools.word_count.describe()
    )
    out = await caller.call(call)
    assert out.ok and out.preview == '{"words": 3, "lines": 2}'
    message, event = await recorded(sessionmaker, call)
    assert message is not None and message.role == "tool" and message.name == "word_count"
    assert event is not None and event.payload["data"] == {"words": 3, "lines": 2}
    assert event.payload["ok"] is True


async def test_a_result_holding_nan_or_infinity_is_recorded_as_null(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """A Python float's NaN or infinity is no JSON number: PostgreSQL's JSON refused the
    call's record, the write was retried until the call failed for good, and the session
    with it. The record keeps null, as JSON serializers write them."""
    for numerator, shown in ((0.0, "NaN"), (-1.0, "-Infinity")):
        call = await model_asked(
            sessionmaker,
            "ratio",
            {"numerator": numerator, "denominator": 0.0},
            tool=py_tools.ratio.describe(),
        )
        out = await caller.call(call)
        assert out.ok, out
        assert out.preview == f'{{"ratio": {shown}}}'  # the model reads what the tool said
        message, event = await recorded(sessionmaker, call)
        assert message is not None and message.content == out.preview
        assert event is not None and event.payload["data"] == {"ratio": None}


async def test_bad_arguments_go_back_to_the_model(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    call = await model_asked(
        sessionmaker, "word_count", {"txt": "oops"}, tool=py_tools.word_count.describe()
    )
    out = await caller.call(call)
    assert out.error_type is None and not out.ok
    # Checked against the catalog's schema (what the model was shown) before the tool runs.
    assert out.preview == (
        "error: invalid arguments for word_count at (root): "
        "Additional properties are not allowed ('txt' was unexpected); "
        "at (root): 'text' is a required property"
    )
    message, _ = await recorded(sessionmaker, call)
    assert message is not None and message.content == out.preview


async def test_a_timeout_is_a_tool_error(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    call = await model_asked(
        sessionmaker, "sleepy", {"seconds": 30}, tool=py_tools.sleepy.describe()
    )
    out = await caller.call(call)
    assert (out.ok, out.preview) == (False, "error: tool sleepy timed out after 0.5s")


async def test_an_exception_is_a_short_tool_error(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    call = await model_asked(
        sessionmaker, "explode", {"message": "bad state"}, tool=py_tools.explode.describe()
    )
    out = await caller.call(call)
    assert (out.ok, out.preview) == (False, "error: tool explode failed: RuntimeError: bad state")


async def test_a_tool_that_exits_or_is_interrupted_fails_its_call_not_its_worker(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    """``sys.exit`` in a tool (SystemExit) was retried without end as the activity's
    failure ("attempt 9: 3"), past the tool's attempts; KeyboardInterrupt left the call
    hanging. Both are the tool's error, which the model reads, as any other exception."""
    call = await model_asked(
        sessionmaker, "quit_process", {"code": 3}, tool=py_tools.quit_process.describe()
    )
    out = await caller.call(call)
    assert (out.ok, out.preview) == (False, "error: tool quit_process failed: SystemExit: 3")
    call = await model_asked(sessionmaker, "interrupted", {}, tool=py_tools.interrupted.describe())
    out = await caller.call(call)
    assert (out.ok, out.preview) == (False, "error: tool interrupted failed: KeyboardInterrupt")


async def test_tool_retry_runs_again_with_the_same_idempotency_key(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession], tmp_path: Path
) -> None:
    journal = tmp_path / "attempts.txt"
    call = await model_asked(
        sessionmaker,
        "flaky",
        {"journal": str(journal), "failures": 2},
        tool=py_tools.flaky.describe(),
    )
    out = await caller.call(call)
    assert (out.ok, out.preview) == (True, "done on attempt 3")
    attempts = [line.split() for line in journal.read_text().splitlines()]
    key = f"vigil:{call.session_id}:1:0"
    assert attempts == [["1", key], ["2", key], ["3", key]]
    # The record says which attempt answered: one past the first may have run the tool
    # before (a worker lost, PostgreSQL away as its answer was written).
    (called,) = await events(sessionmaker, call.session_id, "tool_call")
    assert called.payload["attempt"] == 3, called.payload


async def test_retries_stop_at_max_attempts_from_the_agent_file(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession], tmp_path: Path
) -> None:
    journal = tmp_path / "attempts.txt"
    entry = py_tools.flaky.describe().model_copy(update={"max_attempts": 2})
    call = await model_asked(
        sessionmaker, "flaky", {"journal": str(journal), "failures": 9}, tool=entry
    )
    out = await caller.call(call)
    assert (out.ok, out.preview) == (
        False,
        "error: tool flaky failed after 2 attempts: the service is busy",
    )
    assert len(journal.read_text().splitlines()) == 2


async def test_a_tool_writes_artifacts_of_its_session(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    call = await model_asked(
        sessionmaker,
        "save_note",
        {"name": "notes/today.txt", "text": "hello"},
        tool=py_tools.save_note.describe(),
    )
    out = await caller.call(call)
    assert out.ok and out.preview == f"saved notes/today.txt (5 bytes) for {call.session_id} step 1"
    _ref, data = await get_artifact(
        caller.rt.activities.store,
        sessionmaker,
        agent_id=call.agent_id,
        session_id=call.session_id,
        name="notes/today.txt",
    )
    assert data == b"hello"


async def test_a_tool_this_worker_does_not_load_fails_the_call_at_once(
    caller: ToolCaller, sessionmaker: async_sessionmaker[DbSession]
) -> None:
    missing = ToolDescriptor(
        name="not_here", kind="python", parameters={"type": "object", "properties": {}}
    )
    call = await model_asked(sessionmaker, "not_here", {}, tool=missing)
    out = await caller.call(call)
    assert out.error_type == names.ERR_TOOL_NOT_LOADED
    assert out.error is not None
    assert "tool 'not_here' is not loaded on this worker (task queue" in out.error
    assert "word_count" in out.error  # what it does offer
    message, _ = await recorded(sessionmaker, call)
    assert message is None  # nothing recorded: the workflow decides what the model hears
