"""A search attribute's preview stays within Temporal's limit for a value, and is the plain
preview whenever that already fits (so a running session's values replay unchanged)."""

from __future__ import annotations

import json

import pytest

from vigil.schema.payloads import SEARCH_VALUE_BYTES, bounded_preview, preview


@pytest.mark.parametrize(
    "text",
    ["measure the river", "a" * 5000, 'quote " and \\ ' * 90, "é" * 300, "x" * 999 + "日"],
)
def test_a_preview_that_fits_is_the_plain_preview(text: str) -> None:
    assert len(json.dumps(preview(text, 1000))) <= SEARCH_VALUE_BYTES
    assert bounded_preview(text) == preview(text, 1000)


@pytest.mark.parametrize("text", ["日" * 400, "🌊" * 3000, "\x01" * 1000, "a" * 300 + "語" * 700])
def test_a_preview_that_does_not_fit_is_cut_to_the_longest_that_does(text: str) -> None:
    shown = bounded_preview(text)
    assert len(json.dumps(shown)) <= SEARCH_VALUE_BYTES
    assert shown.endswith("…") and text.startswith(shown[:-1])
    one_more = text[: len(shown)] + "…"  # a character longer no longer fits
    assert len(json.dumps(one_more)) > SEARCH_VALUE_BYTES


def test_a_smaller_bound_is_kept_too() -> None:
    shown = bounded_preview("日" * 1000, max_json=1200)
    assert len(json.dumps(shown)) <= 1200 and shown.startswith("日")
