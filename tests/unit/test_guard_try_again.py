"""When a part of an activity that must not fail it (the outcome's memory riding with the
last records) is tried again by failing the attempt, and when it is given up."""

from __future__ import annotations

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from vigil.activities.guard import try_again


def test_an_outage_is_tried_again_whatever_the_attempt() -> None:
    outage = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    assert try_again(outage, attempt=50, budget=10)


@pytest.mark.parametrize(("attempt", "expected"), [(1, True), (9, True), (10, False)])
def test_a_failure_is_tried_again_within_its_budget(attempt: int, expected: bool) -> None:
    assert try_again(RuntimeError("the embedder answered 500"), attempt, 10) is expected


def test_a_non_retryable_failure_is_given_up_at_once() -> None:
    refused = ApplicationError("empty content", type="InvalidInput", non_retryable=True)
    assert not try_again(refused, attempt=1, budget=10)
    assert try_again(ApplicationError("flaky"), attempt=1, budget=10)


def test_without_a_budget_one_attempt() -> None:
    assert not try_again(RuntimeError("boom"), attempt=1, budget=None)
