"""The worker's wiring: clients built from settings and handed to the activities.

Activities never read the settings module themselves (their dependencies arrive built);
everything that turns configuration into a client lives here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from minio import Minio
from minio.error import S3Error

from vigil.activities.artifacts.s3 import S3Store
from vigil.activities.artifacts.store import ArtifactStore, FilesystemStore
from vigil.activities.memory.embedders import (
    MINILM_DIM,
    OPENAI_BASE_URL,
    Embedder,
    EmbedderUnavailable,
    HashingEmbedder,
    LocalMiniLMEmbedder,
    OpenAIEmbedder,
)
from vigil.activities.models.base import ModelProvider
from vigil.activities.models.connections import build_provider
from vigil.activities.models.http import HttpClient
from vigil.workers.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from vigil.activities.memory.store import MemoryStore


def make_store(settings: Settings) -> ArtifactStore:
    """The artifact store ``settings.artifact_backend`` names."""
    if settings.artifact_backend == "s3":
        return S3Store(make_s3_client(settings), settings.s3_bucket)
    return FilesystemStore(settings.endpoints().artifact_dir)


def make_s3_client(settings: Settings) -> Minio:
    endpoints = settings.endpoints()
    if endpoints.s3_endpoint is None:
        raise RuntimeError(
            "no S3 endpoint: set VIGIL_S3_ENDPOINT or run `vigil stack up` with MinIO"
        )
    return Minio(
        endpoints.s3_endpoint,
        access_key=endpoints.s3_access_key,
        secret_key=endpoints.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
    )


def ensure_bucket(settings: Settings) -> None:
    client = make_s3_client(settings)
    if not client.bucket_exists(settings.s3_bucket):
        with contextlib.suppress(S3Error):  # a concurrent creator won the race
            client.make_bucket(settings.s3_bucket)


def make_provider(settings: Settings, *, client: HttpClient | None = None) -> ModelProvider:
    """The provider ``settings.model_provider`` names (the ``default`` connection).

    ``scripted`` plays DEMO_SCRIPT, or the JSON script at ``model_base_url`` when that is a
    ``file://`` URL. ``client`` lets the worker share one HTTP client between providers;
    the caller then owns (and closes) it.
    """
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    return build_provider(
        settings.model_provider,
        base_url=settings.model_base_url,
        model=settings.model_name,
        api_key=key,
        timeout=settings.model_timeout_seconds,
        client=client,
    )


def make_embedder(settings: Settings, *, client: HttpClient | None = None) -> Embedder:
    """The embedder named by ``settings.embedder`` (``hashing``, ``openai`` or ``local``)."""
    if settings.embedder == "hashing":
        return HashingEmbedder(settings.embedding_dim)
    if settings.embedder == "openai":
        key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
        model = settings.embedding_model
        return OpenAIEmbedder(
            settings.embedding_base_url or OPENAI_BASE_URL,
            model,
            key,
            settings.embedding_dim,
            client,
            timeout=settings.model_timeout_seconds,
            # OpenAI's v3 models shorten their vectors on request; others refuse the field.
            request_dimensions=model.startswith("text-embedding-3"),
        )
    if settings.embedder == "local":
        if settings.embedding_dim != MINILM_DIM:
            raise ValueError(
                f"the local embedder (all-MiniLM-L6-v2) makes {MINILM_DIM}-dimensional "
                f"vectors; set VIGIL_EMBEDDING_DIM={MINILM_DIM} (it is {settings.embedding_dim})"
            )
        return LocalMiniLMEmbedder()
    raise ValueError(f"unknown embedder {settings.embedder!r}")


@contextlib.asynccontextmanager
async def configured_embedder(settings: Settings) -> AsyncIterator[Embedder | None]:
    """The embedder the settings name, closed after use; None when it cannot be built here
    (the local model's extra not installed, a dimension it cannot make)."""
    try:
        embedder = make_embedder(settings)
    except (EmbedderUnavailable, ValueError):
        yield None
        return
    try:
        yield embedder
    finally:
        await embedder.aclose()


def make_memory_store(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    embedder: Embedder | None = None,
) -> MemoryStore:
    """The memory store recall and remember use, tuned by the settings
    (``memory_ef_search``); ``embedder`` defaults to ``make_embedder(settings)``."""
    # Imported here: the CLI's start-up does not pay for the store's module.
    from vigil.activities.memory.store import MemoryStore

    return MemoryStore(
        sessionmaker,
        embedder if embedder is not None else make_embedder(settings),
        ef_search=settings.memory_ef_search or None,
        redact=settings.memory_redact,
    )
