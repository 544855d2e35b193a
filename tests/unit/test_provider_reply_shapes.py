"""Provider replies of shapes no provider should send are refused as malformed replies
(retried as such), never an exception of another kind; a Retry-After is taken for an hour
at most."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.activities.models.anthropic import _StreamedMessage
from vigil.activities.models.base import (
    MAX_RETRY_AFTER_SECONDS,
    ProviderError,
    parse_retry_after,
    token_count,
)
from vigil.activities.models.openai_compat import _StreamedReply


@pytest.mark.parametrize("calls", [5, "x", {"index": 0}])
def test_streamed_tool_calls_that_are_no_list_are_malformed(calls: Any) -> None:
    # ``5`` raised TypeError ('int' object is not iterable) out of the parse.
    with pytest.raises(ProviderError, match="malformed reply"):
        _StreamedReply("m").add({"choices": [{"delta": {"tool_calls": calls}}]}, None)


def test_a_block_delta_whose_index_is_no_number_is_not_a_block() -> None:
    # ``[0]`` raised TypeError (unhashable type) out of the parse.
    message = _StreamedMessage("m")
    start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
    message.add(start)
    delta = {"type": "content_block_delta", "index": [0], "delta": {"type": "text_delta"}}
    assert message.add(delta) == ("", False)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("31536000", MAX_RETRY_AFTER_SECONDS), ("1e15", MAX_RETRY_AFTER_SECONDS)],
)
def test_retry_after_is_taken_for_an_hour_at_most(header: str, seconds: float) -> None:
    # A year silently stopped the session until its deadline; 1e15 overflowed its timer.
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    ("value", "count"), [(12, 12), (-5, 0), (2**70, 0), (True, 0), (1.5, 0), ("9", 0)]
)
def test_token_counts_out_of_range_are_none(value: Any, count: int) -> None:
    assert token_count(value) == count
