"""A local activity's outage ledger across its attempts (activities/guard.py).

Local activities have no heartbeat details, so the guard keeps their ledger on the
activity's owner. Temporal gives a local activity's retry a new activity id once it has
waited on a durable timer (a backoff past the local retry threshold), and an attempt may
end without a word (timed out, cancelled): the ledger survives both, and the call's own
failure budget counts its own failures, never the outage's attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from vigil.activities.guard import LocalLedgers, guarded
from vigil.schema import names


class Call(BaseModel):
    session_id: str = "s-1"
    agent_id: str = "a-1"
    seq: int = 7
    max_failures: int = 2


def _outage() -> Exception:
    return asyncpg.exceptions.CannotConnectNowError("the database system is starting up")


class Owner:
    """An activity class with a scripted body: each attempt does what ``script`` says."""

    def __init__(self, script: list[Callable[[], Any]]) -> None:
        self.local_ledgers = LocalLedgers()
        self.script = script

    @guarded
    async def act(self, arg: Call) -> str:
        step = self.script.pop(0)
        result = step()
        if isinstance(result, BaseException):
            raise result
        return "done"


async def _attempt(owner: Owner, attempt: int, activity_id: str, arg: Call) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        is_local=True,
        attempt=attempt,
        activity_id=activity_id,
        workflow_run_id="run-1",
        activity_type=names.ACT_CALL_MODEL,
        heartbeat_details=[],
    )
    try:
        return await env.run(owner.act, arg)
    except ApplicationError as exc:
        return exc


def _provider_error() -> Exception:
    return ApplicationError("upstream hiccup", type=names.ERR_PROVIDER_TRANSIENT)


async def test_outage_attempts_are_not_spent_from_the_budget_after_a_timer_backed_retry() -> None:
    owner = Owner([_outage] * 6 + [_provider_error, lambda: None])
    arg = Call()
    waits = []
    for attempt in range(1, 7):
        # Past the 30 s threshold a retry waits on a timer and comes back with a new id.
        failed = await _attempt(owner, attempt, str(attempt if attempt < 6 else 40), arg)
        assert isinstance(failed, ApplicationError) and failed.type == names.ERR_INFRA_UNAVAILABLE
        assert failed.next_retry_delay is not None
        waits.append(failed.next_retry_delay.total_seconds())
    assert waits == [1, 2, 4, 8, 16, 30]  # backing off across the new id too
    hiccup = await _attempt(owner, 7, "41", arg)
    assert isinstance(hiccup, ApplicationError) and not hiccup.non_retryable  # 1 of 2
    assert await _attempt(owner, 8, "42", arg) == "done"
    assert owner.local_ledgers.get(("run-1", names.ACT_CALL_MODEL, "7")) is None  # forgotten


async def test_an_attempt_that_ends_without_a_word_passes_the_ledger_on() -> None:
    def timed_out() -> Any:
        raise asyncio.CancelledError()  # what a start-to-close timeout leaves

    owner = Owner([_outage, _outage, timed_out, _provider_error])
    arg = Call()
    for attempt in (1, 2):
        await _attempt(owner, attempt, str(attempt), arg)
    with pytest.raises(asyncio.CancelledError):
        await _attempt(owner, 3, "3", arg)
    second = await _attempt(owner, 4, "4", arg)
    # The attempt that timed out and the provider's error: the budget of two is spent, the
    # outages' attempts were not counted.
    assert isinstance(second, ApplicationError) and second.non_retryable
    assert "failed 2 times, giving up" in str(second)
    assert owner.local_ledgers.get(("run-1", names.ACT_CALL_MODEL, "7")) is None


async def test_a_call_that_times_out_on_every_attempt_gives_up_at_its_budget() -> None:
    """Each attempt that timed out raised nothing, so nothing counted it: a call whose
    every attempt outlived its time limit was retried for ever."""

    def timed_out() -> Any:
        raise asyncio.CancelledError()

    owner = Owner([timed_out, timed_out, _provider_error])
    arg = Call()
    for attempt in (1, 2):
        with pytest.raises(asyncio.CancelledError):
            await _attempt(owner, attempt, str(attempt), arg)
    third = await _attempt(owner, 3, "3", arg)
    assert isinstance(third, ApplicationError) and third.non_retryable
    assert "failed 2 times, the last without a result" in str(third)
    assert len(owner.script) == 1  # the third attempt gave up before calling again


async def test_each_model_call_of_a_run_has_its_own_ledger() -> None:
    owner = Owner([_outage, _provider_error])
    await _attempt(owner, 1, "1", Call(seq=7))
    other = await _attempt(owner, 1, "2", Call(seq=9))
    assert isinstance(other, ApplicationError) and not other.non_retryable
    kept = owner.local_ledgers.get(("run-1", names.ACT_CALL_MODEL, "7"))
    assert kept is not None and kept.outages == 1
    assert owner.local_ledgers.get(("run-1", names.ACT_CALL_MODEL, "9")) is not None


async def test_a_call_issued_again_does_not_count_the_attempt_it_left() -> None:
    """A local call issued again from its first attempt (its workflow left the worker's
    cache, or cancelled and asked again) finds the ledger of the one it left: that
    attempt ended without a word but was not lost, and is not a failure."""

    def left() -> Any:
        raise asyncio.CancelledError()

    owner = Owner([left, _provider_error])
    arg = Call()
    with pytest.raises(asyncio.CancelledError):
        await _attempt(owner, 1, "1", arg)
    again = await _attempt(owner, 1, "2", arg)
    assert isinstance(again, ApplicationError) and not again.non_retryable, again
