"""A tool's arguments against its schema: integers are those a tool can take."""

from __future__ import annotations

import pytest

from vigil.schema.arguments import MAX_EXACT, argument_validator, fit_errors

INT = {"type": "object", "properties": {"n": {"type": "integer"}}}


@pytest.mark.parametrize("n", [0, 5, -7, 5.0, float(MAX_EXACT), 2**70])
def test_whole_numbers_are_integers(n: object) -> None:
    assert fit_errors(argument_validator(INT), {"n": n}) is None


@pytest.mark.parametrize("n", [1e30, -1e20, float(MAX_EXACT) * 2, 5.5, True, "5"])
def test_numbers_no_tool_can_take_as_integers_are_not(n: object) -> None:
    found = fit_errors(argument_validator(INT), {"n": n})
    assert found is not None and found.startswith("at n: ") and "is not of type 'integer'" in found


def test_json_schemas_own_integers_remain_for_older_histories() -> None:
    assert fit_errors(argument_validator(INT, strict=False), {"n": 1e30}) is None
