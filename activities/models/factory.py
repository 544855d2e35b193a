"""Pick the model provider from settings."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx

from vigil.activities.models.anthropic import AnthropicProvider
from vigil.activities.models.base import ModelProvider
from vigil.activities.models.openai_compat import OpenAIChatProvider
from vigil.activities.models.scripted import DEMO_SCRIPT, ScriptedProvider
from vigil.workers.settings import Settings

OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"


def make_provider(settings: Settings, *, client: httpx.AsyncClient | None = None) -> ModelProvider:
    """The provider ``settings.model_provider`` names.

    ``scripted`` plays DEMO_SCRIPT, or the JSON script at ``model_base_url`` when that is a
    ``file://`` URL. ``client`` lets the worker share one httpx client between providers;
    the caller then owns (and closes) it.
    """
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    timeout = settings.model_timeout_seconds
    if settings.model_provider == "openai":
        return OpenAIChatProvider(
            settings.model_base_url or OPENAI_BASE_URL,
            settings.model_name,
            key,
            timeout,
            client=client,
        )
    if settings.model_provider == "anthropic":
        return AnthropicProvider(
            settings.model_base_url or ANTHROPIC_BASE_URL,
            settings.model_name,
            key,
            timeout,
            client=client,
        )
    url = settings.model_base_url
    if url and url.startswith("file:"):
        path = Path(url2pathname(urlparse(url).path))
        return ScriptedProvider.from_json(
            path.read_text(encoding="utf-8"), model=settings.model_name
        )
    return ScriptedProvider(DEMO_SCRIPT, model=settings.model_name)
