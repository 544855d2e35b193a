"""`read_artifact` reads a large artifact as a stream: one chunk and the page held at a
time (it read the whole artifact, up to the 1 GiB an upload may be, and decoded all of it,
for each page of 20,000 characters). The page, the total count and the bytes are those a
whole read gives, however the chunks cut the UTF-8."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator

import pytest

from vigil.activities.tools.registry import _window

TEXT = "tide é 潮 🌊 line\n" * 300
DATA = TEXT.encode() + b"\xff\xfe broken \xe2\x82" + "end €".encode()


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    for a, b in itertools.pairwise(edges):
        yield data[a:b]


@pytest.mark.parametrize("seed", range(20))
async def test_a_streamed_page_is_the_whole_reads_page(seed: int) -> None:
    rng = random.Random(seed)
    whole = DATA.decode("utf-8", errors="replace")
    cuts = [rng.randrange(1, len(DATA)) for _ in range(rng.randrange(0, 40))]
    offset = rng.choice([0, 1, 17, len(whole) // 2, len(whole) - 3, len(whole), len(whole) + 9])
    max_chars = rng.choice([1, 5, 100, 20_000])
    page, total, size = await _window(_chunks(DATA, cuts), offset, max_chars)
    assert (page, total, size) == (whole[offset : offset + max_chars], len(whole), len(DATA))
