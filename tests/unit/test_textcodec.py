"""Any Python string survives the TEXT/JSONB encoding unchanged (property tests)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.schema import textcodec

odd_chars = st.one_of(
    st.characters(),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from(["\x00", "\\", "\\0", "\\uD800", "$vigil.text", "$vigil.key:"]),
)
odd_text = st.lists(odd_chars, max_size=40).map("".join)
# Keys shaped like the codec's own marks come up often: a user's object may hold them.
marked_keys = st.sampled_from(["$vigil.text", "$vigil.raw", "$vigil.key:", "$vigil.key:\\0"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | odd_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(odd_text | marked_keys, children, max_size=4)
        | st.dictionaries(marked_keys, children, min_size=1, max_size=1)
    ),
    max_leaves=20,
)


def _storable(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_all_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _all_strings(v)]
    return []


@given(odd_text)
def test_text_round_trips_and_stored_form_is_storable(text: str) -> None:
    stored, flag = textcodec.encode(text)
    assert _storable(stored)
    assert textcodec.decode(stored, flag) == text


@given(st.text().filter(_storable))
def test_ordinary_text_is_stored_as_is(text: str) -> None:
    assert textcodec.encode(text) == (text, textcodec.PLAIN)


@given(json_values)
def test_json_round_trips_and_holds_only_storable_strings(value: Any) -> None:
    encoded = textcodec.encode_json(value)
    assert all(_storable(s) for s in _all_strings(encoded))
    assert textcodec.decode_json(encoded) == value


@pytest.mark.parametrize(
    "value",
    [
        {"$vigil.text": {"$vigil.raw": "s"}},
        {"$vigil.text": {"$vigil.raw": {"a": 1}}},
        {"$vigil.text": {"$vigil.raw": ["x"]}},
        {"$vigil.text": {}},
        {"$vigil.text": {"$vigil.text": "nul\x00"}},
        [{"$vigil.text": {"$vigil.raw": {"$vigil.text": "t"}}}],
    ],
)
def test_objects_shaped_like_the_codecs_marks_come_back_as_they_were(value: Any) -> None:
    assert textcodec.decode_json(textcodec.encode_json(value)) == value


@pytest.mark.parametrize(
    "stored",
    [
        {"$vigil.text": {"$vigil.raw": "s"}},  # written as it was before its mark was kept
        {"$vigil.text": {"$vigil.raw": None}},
        {"$vigil.text": 5},
        {"$vigil.text": {"$vigil.raw": {"a": 1}, "b": 2}},
    ],
)
def test_any_stored_json_reads_back_without_an_error(stored: Any) -> None:
    # Not the codec's own wrapping: a user's object stored as it was, read as it is.
    assert textcodec.decode_json(stored) == stored
