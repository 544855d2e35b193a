"""JSON of any depth is measured, parsed and written without RecursionError."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from vigil.schema import jsonlimits


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value, level] if level % 2 else {"k": value, "n": None}
    return value


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(7 if depth < 5 else 4)
    if pick == 0:
        return rng.choice([None, True, False])
    if pick == 1:
        return rng.uniform(-1e6, 1e6)
    if pick == 2:
        return rng.randrange(-(10**12), 10**12)
    if pick == 3:
        return "".join(rng.choice('ab"\\\n\x00é€😀') for _ in range(rng.randrange(6)))
    if pick in (4, 5):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f'k{i}"': _random_value(rng, depth + 1) for i in range(rng.randrange(4))}


@pytest.mark.parametrize("depth", [0, 1, 2, 99, 100, 101, 5000])
def test_depth_and_dumps_match_the_standard_library(depth: int) -> None:
    value = _nested(depth)
    assert jsonlimits.depth(value) == depth
    text = jsonlimits.dumps(value)
    if depth <= 500:
        assert text == json.dumps(value)
    assert text.count("[") + text.count("{") == depth


def test_dumps_matches_json_dumps_on_random_shapes() -> None:
    rng = random.Random(3)
    for _ in range(300):
        value = _random_value(rng)
        deep: Any = value
        for _ in range(150):  # past the depth left to json.dumps: the iterative writer
            deep = [deep]
        for candidate in (value, deep):
            assert jsonlimits.dumps(candidate) == json.dumps(candidate)


def test_depth_stops_early_past_its_limit() -> None:
    assert jsonlimits.depth(_nested(10_000), limit=64) == 65


def test_loads_refuses_what_is_too_deep_as_a_value_error() -> None:
    assert jsonlimits.loads('{"a": [[1]]}', 3) == {"a": [[1]]}
    with pytest.raises(jsonlimits.TooDeep, match="deeper than 2 levels"):
        jsonlimits.loads('{"a": [[1]]}', 2)
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonlimits.loads("[" * 100_000 + "]" * 100_000)


def test_deeply_nested_edited_arguments_are_refused_not_a_recursion() -> None:
    from vigil.schema.limits import input_error
    from vigil.schema.payloads import ApproveInput

    deep: dict[str, object] = {}
    node = deep
    for _ in range(3000):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    why = input_error(ApproveInput(approval_id="a1-0", edited_arguments=deep))
    assert why is not None and "deeper than 64" in why
    assert input_error(ApproveInput(approval_id="a1-0", edited_arguments={"url": "x"})) is None


def test_loads_parses_what_json_loads_parses_and_refuses_what_it_refuses() -> None:
    rng = random.Random(5)
    texts = [json.dumps(_random_value(rng)) for _ in range(300)]
    texts += [
        "NaN",
        '{"x": Infinity}',
        str(10**30),
        '"\\ud800"',  # an escaped lone surrogate
        '{"a": 1, "a": 2}',
        ' [1, 2.5e300, -0.0, "\\u00e9"] ',
    ]
    for text in texts:
        expected = json.loads(text)
        got = jsonlimits.loads(text)
        assert got == expected or (got != got and expected != expected)  # NaN
        assert json.dumps(got) == json.dumps(expected)
        assert jsonlimits.loads(text.encode("utf-8")) == got or text == "NaN"
    for broken in ("", "{", "[1,]", "'a'", '{"a" 1}', "tru"):
        with pytest.raises(ValueError):
            json.loads(broken)
        with pytest.raises(ValueError):
            jsonlimits.loads(broken)
