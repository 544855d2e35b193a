"""Pick the artifact backend from settings."""

from __future__ import annotations

from vigil.activities.artifacts.store import ArtifactStore, FilesystemStore
from vigil.workers.settings import Settings


def make_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_backend == "s3":
        from vigil.activities.artifacts.s3 import S3Store

        return S3Store.from_settings(settings)
    return FilesystemStore(settings.endpoints().artifact_dir)
