"""Out-of-range numbers of a session's input: refused by the faces (schema/limits.py), and
given a value by the workflow instead of failing its task (workflows/times.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.test_agent_files import TOML, _problems, _write
from vigil.schema.agents import SpecBudget
from vigil.schema.limits import (
    MAX_BUDGET_COUNT,
    MAX_BUDGET_SECONDS,
    budget_problem,
    session_input_error,
    start_error,
)
from vigil.schema.payloads import Budget, StartSessionInput, ToolPolicy
from vigil.workflows import times

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LIMIT = timedelta(minutes=10)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, NOW),
        (90, NOW + timedelta(seconds=90)),
        (1e11, NOW + timedelta(seconds=1e11)),  # year 5195: as before
        (-3600, NOW - timedelta(hours=1)),
        (1e12, times.LATEST),  # past the year 9999
        (1e300, times.LATEST),
        (math.inf, times.LATEST),
        (math.nan, times.LATEST),
        (-1e12, NOW),  # before year 1
        (-math.inf, NOW),
    ],
)
def test_later_never_raises(seconds: float, expected: datetime) -> None:
    assert times.later(NOW, seconds) == expected


def test_a_deadline_without_a_time_zone_is_utc() -> None:
    naive = datetime(2030, 1, 1)
    assert times.aware(naive) == datetime(2030, 1, 1, tzinfo=UTC)
    other = datetime(2030, 1, 1, tzinfo=times.LATEST.tzinfo)
    assert times.aware(other) is other


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (20, timedelta(seconds=20)),
        (0, timedelta(0)),
        (3600, timedelta(hours=1)),  # longer than the limit: as before (the server caps it)
        (-5, None),  # Temporal refuses a negative heartbeat timeout
        (math.nan, None),
        (1e12, LIMIT),  # too long for a Temporal timeout
        (math.inf, LIMIT),
    ],
)
def test_heartbeat_never_raises(seconds: float, expected: timedelta | None) -> None:
    assert times.heartbeat(seconds, LIMIT) == expected


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        (Budget(max_seconds=1e12), "budget.max_seconds"),
        (Budget(max_seconds=MAX_BUDGET_SECONDS + 1), "budget.max_seconds"),
        (Budget(max_seconds=math.inf), "budget.max_seconds"),
        (Budget(max_seconds=math.nan), "budget.max_seconds"),
        (Budget(max_seconds=-1), "budget.max_seconds"),
        (Budget(max_steps=MAX_BUDGET_COUNT + 1), "budget.max_steps"),
        (Budget(max_tokens=10**30), "budget.max_tokens"),
        (Budget(max_cost_usd=math.inf), "budget.max_cost_usd"),
        (Budget(max_cost_usd=math.nan), "budget.max_cost_usd"),
        (Budget(deadline=NOW + timedelta(days=365 * 101)), "budget.deadline"),
        (Budget(deadline=datetime(9999, 1, 1)), "budget.deadline"),
        # A session that may take no step, no token, no cost ends at once: refused as the
        # API and the CLI refuse them (agent files took them).
        (Budget(max_steps=0), "budget.max_steps"),
        (Budget(max_steps=-3), "budget.max_steps"),
        (Budget(max_tokens=-100), "budget.max_tokens"),
        (Budget(max_cost_usd=-1.5), "budget.max_cost_usd"),
        (Budget(max_cost_usd=0), "budget.max_cost_usd"),
        # No time at all, refused by the API only: the CLI's session timed out at once.
        (Budget(max_seconds=0), "budget.max_seconds"),
    ],
)
def test_out_of_range_budgets_are_refused(budget: Budget, field: str) -> None:
    found = budget_problem(budget, NOW)
    assert found is not None and found[0] == field, found
    error = session_input_error(StartSessionInput(agent_id="a", goal="g", budget=budget), NOW)
    assert error is not None and error.startswith(f"{field}: "), error


def test_in_range_budgets_and_inputs_pass() -> None:
    for budget in (
        Budget(),
        Budget(max_seconds=MAX_BUDGET_SECONDS, max_steps=MAX_BUDGET_COUNT, max_cost_usd=1e6),
        Budget(max_seconds=0.5),
        Budget(deadline=NOW + timedelta(days=365 * 99)),
        Budget(deadline=datetime(2000, 1, 1)),  # past: the session times out at once
    ):
        assert budget_problem(budget, NOW) is None, budget
    assert session_input_error(StartSessionInput(agent_id="a", goal="g"), NOW) is None
    assert (
        session_input_error(StartSessionInput(agent_id="a", goal="g", heartbeat_seconds=0)) is None
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"policy": ToolPolicy(approval_timeout_seconds=1e12)}, "policy.approval_timeout_seconds"),
        ({"policy": ToolPolicy(approval_timeout_seconds=0)}, "policy.approval_timeout_seconds"),
        ({"policy": ToolPolicy(ask_human_timeout_seconds=math.nan)}, "policy.ask_human_timeout"),
        ({"heartbeat_seconds": -5}, "heartbeat_seconds"),
        ({"heartbeat_seconds": 1e12}, "heartbeat_seconds"),
        ({"heartbeat_seconds": math.nan}, "heartbeat_seconds"),
        ({"steps_per_run": 0}, "steps_per_run: 0 is not 1 or more"),
        ({"steps_per_run": -3}, "steps_per_run"),
        ({"context_messages": 0}, "context_messages: 0 is not from 1 to 10000"),
        ({"context_messages": 10_001}, "context_messages"),
    ],
)
def test_out_of_range_timeouts_and_counts_are_refused(
    fields: dict[str, object], error: str
) -> None:
    arg = StartSessionInput(agent_id="a", goal="g", **fields)  # type: ignore[arg-type]
    found = session_input_error(arg, NOW)
    assert found is not None and found.startswith(error), found


def test_an_agent_file_with_an_out_of_range_budget_names_the_line(tmp_path: Path) -> None:
    bad = TOML.replace("max_steps = 12", "max_steps = 12\nmax_seconds = 1e12")
    path = _write(tmp_path, "huge.toml", bad + "\n")
    lines = _problems(path)
    assert any(
        ln.startswith(f"{path}:22: budget.max_seconds: 1e+12 seconds exceeds the limit")
        for ln in lines
    ), lines
    negative = TOML.replace("max_steps = 12", "max_steps = -3")
    lines = _problems(_write(tmp_path, "negative.toml", negative))
    assert any(":21: budget.max_steps: -3 is not 1 or more" in ln for ln in lines), lines
    long_wait = TOML.replace(
        'name = "researcher"', 'name = "researcher"\napproval_timeout_seconds = inf'
    )
    lines = _problems(_write(tmp_path, "wait.toml", long_wait))
    assert any("approval_timeout_seconds: inf seconds exceeds" in ln for ln in lines), lines


@pytest.mark.parametrize("goal", ["", "   ", "\n\t "])
def test_a_goal_of_nothing_but_spaces_is_refused(goal: str) -> None:
    """A message of only spaces was refused as empty while a goal of only spaces started a
    session that had nothing to do."""
    assert start_error(goal, None) == "goal is empty"
    assert start_error(" x ", None) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_steps", True), ("max_tokens", "1000"), ("max_cost_usd", False), ("max_steps", 5.0)],
)
def test_a_definitions_limit_given_as_true_or_text_is_refused(field: str, value: object) -> None:
    """An agent file's ``[budget]`` (``SpecBudget``): ``true`` was a budget of one step,
    ``"1000"`` a thousand tokens."""
    with pytest.raises(ValueError, match=field):
        SpecBudget.model_validate({field: value})
    assert SpecBudget.model_validate({"max_cost_usd": 2}).max_cost_usd == 2.0


def test_a_sessions_limits_decode_from_history_whatever_their_json_type() -> None:
    """``Budget`` and ``ToolPolicy`` are decoded by Temporal from a session's history,
    which any starter may have written (``temporal workflow start --input``): a value
    that failed to decode would fail the session's every workflow task, with no record.
    vigil's faces refuse such values before a start (the API's bodies, agent files)."""
    budget = Budget.model_validate_json('{"max_steps": 5.0, "max_seconds": "90"}')
    assert (budget.max_steps, budget.max_seconds) == (5, 90.0)
    policy = ToolPolicy.model_validate_json('{"max_malformed_replies": 2.0}')
    assert policy.max_malformed_replies == 2
    again = Budget(max_steps=7, max_cost_usd=2, max_seconds=90)
    assert Budget.model_validate_json(again.model_dump_json()) == again
