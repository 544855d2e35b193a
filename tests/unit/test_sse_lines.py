"""A provider's Server-Sent Events stream, cut into lines chunk by chunk.

The lines come out the same wherever the chunks break (inside a line, between the ``\\r``
and ``\\n`` of one line end), and a line far larger than a chunk is joined once, not
re-read with every chunk (a 32 MiB event used to take minutes, and a provider or proxy
that gives up on a slow reader broke the stream).
"""

from __future__ import annotations

import pytest

from vigil.activities.models.base import SseLines

STREAM = "event: a\r\ndata: one\r\ndata: two\r\n\r\ndata: three\n\n: note\rdata: four\r\r"
LINES = ["event: a", "data: one", "data: two", "", "data: three", "", ": note", "data: four", ""]


def _lines(chunks: list[str]) -> list[str]:
    lines = SseLines()
    out: list[str] = []
    for chunk in chunks:
        out += lines.feed(chunk)
    return out


def test_one_chunk() -> None:
    assert _lines([STREAM]) == LINES


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11])
def test_any_chunking_gives_the_same_lines(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert _lines(chunks) == LINES


def test_a_line_end_split_between_cr_and_lf_is_one_line_end() -> None:
    assert _lines(["data: a\r", "\ndata: b\r", "\n\r", "\n"]) == ["data: a", "data: b", ""]


def test_a_huge_line_in_many_chunks_is_kept_whole() -> None:
    piece = "x" * 65_536
    chunks = ["data: "] + [piece] * 200 + ["\n\n"]
    assert _lines(chunks) == ["data: " + piece * 200, ""]


def test_an_unterminated_last_line_is_not_a_line() -> None:
    lines = SseLines()
    assert lines.feed("data: a\ndata: b") == ["data: a"]
    assert lines.pending == "data: b"
