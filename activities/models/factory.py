"""Pick the model provider from settings."""

from __future__ import annotations

import httpx

from vigil.activities.models.base import ModelProvider
from vigil.activities.models.connections import build_provider
from vigil.workers.settings import Settings


def make_provider(settings: Settings, *, client: httpx.AsyncClient | None = None) -> ModelProvider:
    """The provider ``settings.model_provider`` names (the ``default`` connection).

    ``scripted`` plays DEMO_SCRIPT, or the JSON script at ``model_base_url`` when that is a
    ``file://`` URL. ``client`` lets the worker share one httpx client between providers;
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
