"""Named model connections and the per-worker router that turns a name into a provider.

A connection is a provider kind (OpenAI-compatible, Anthropic, scripted), a base URL, a
default model and the *name* of a credential. The workflow carries only names (the
connection, the model); ``call_model`` asks the router for a provider at call time, and
the credential's value is resolved then, inside the activity. Providers are cached per
(connection, model, credential), so a rotated secret gets a fresh provider.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

from vigil.activities.credentials import CredentialResolver
from vigil.activities.models.anthropic import AnthropicProvider
from vigil.activities.models.base import ModelProvider, make_client
from vigil.activities.models.http import HttpClient
from vigil.activities.models.openai_compat import OpenAIChatProvider
from vigil.activities.models.scripted import DEMO_SCRIPT, ScriptedProvider

ProviderKind = Literal["openai", "anthropic", "scripted"]
PROVIDER_KINDS: tuple[ProviderKind, ...] = ("openai", "anthropic", "scripted")
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_CONNECTION = "default"

FALLBACK_FROM_ATTEMPT = 3
"""A call whose connection names a fallback uses it from this attempt of the activity on
(after two failed attempts of the first connection)."""


class ConnectionError_(Exception):
    """A connection is unknown or cannot be built; the message says which and why."""


@dataclass(frozen=True)
class ModelConnection:
    name: str
    kind: ProviderKind
    base_url: str | None = None
    model: str | None = None
    """The model used when an agent names none."""
    credential: str | None = None
    """Name of the credential (``env:VAR`` or a stored one); never the value."""
    timeout_seconds: float = 60.0
    api_key: str | None = field(default=None, repr=False)
    """An inline key (the ``default`` connection's VIGIL_MODEL_API_KEY); never logged."""


def build_provider(
    kind: ProviderKind,
    *,
    base_url: str | None,
    model: str,
    api_key: str | None,
    timeout: float,
    client: HttpClient | None = None,
) -> ModelProvider:
    """One provider. ``scripted`` plays DEMO_SCRIPT, or the JSON script at ``base_url``
    when that is a ``file://`` URL."""
    if kind == "openai":
        return OpenAIChatProvider(base_url or OPENAI_BASE_URL, model, api_key, timeout, client)
    if kind == "anthropic":
        return AnthropicProvider(base_url or ANTHROPIC_BASE_URL, model, api_key, timeout, client)
    path = script_path(base_url)
    if path is not None:
        return ScriptedProvider.from_file(path, model=model)
    return ScriptedProvider(DEMO_SCRIPT, model=model)


def script_path(base_url: str | None) -> Path | None:
    """The script file a scripted connection plays (its ``file://`` base URL), if any."""
    if base_url and base_url.startswith("file:"):
        return Path(url2pathname(urlparse(base_url).path))
    return None


class ModelRouter:
    """The worker's model connections; hands ``call_model`` a provider per call."""

    def __init__(
        self,
        connections: Mapping[str, ModelConnection],
        credentials: CredentialResolver | None = None,
        *,
        default_provider: ModelProvider | None = None,
    ) -> None:
        self.connections = dict(connections)
        self._credentials = credentials
        self._default_provider = default_provider
        self._providers: dict[tuple[str, str, str], ModelProvider] = {}
        self._clients: dict[str, HttpClient] = {}

    def __repr__(self) -> str:
        return f"ModelRouter(connections={sorted(self.connections)})"

    def known(self) -> list[str]:
        names = set(self.connections)
        if self._default_provider is not None:
            names.add(DEFAULT_CONNECTION)
        return sorted(names)

    async def provider(self, name: str, model: str | None = None) -> tuple[ModelProvider, str]:
        """(provider, model name) for a connection; raises ConnectionError_ when unknown,
        ``CredentialError`` when its credential cannot be had."""
        if name == DEFAULT_CONNECTION and self._default_provider is not None and model is None:
            return self._default_provider, getattr(self._default_provider, "model", "")
        conn = self.connections.get(name)
        if conn is None:
            if name == DEFAULT_CONNECTION and self._default_provider is not None:
                return self._default_provider, getattr(self._default_provider, "model", "")
            raise ConnectionError_(
                f"model connection {name!r} is not configured on this worker "
                f"(known: {', '.join(self.known()) or 'none'})"
            )
        chosen = model or conn.model
        if not chosen:
            raise ConnectionError_(f"model connection {name!r} has no default model: name one")
        key = conn.api_key
        if conn.credential is not None:
            if self._credentials is None:
                raise ConnectionError_(f"model connection {name!r}: no credential resolver")
            key = await self._credentials.resolve(conn.credential)
        fingerprint = hashlib.sha256((key or "").encode("utf-8")).hexdigest()
        cache_key = (name, chosen, fingerprint)
        found = self._providers.get(cache_key)
        if found is None:
            client = self._clients.get(name)
            if client is None and conn.kind != "scripted":
                client = self._clients[name] = make_client(conn.timeout_seconds)
            try:
                found = build_provider(
                    conn.kind,
                    base_url=conn.base_url,
                    model=chosen,
                    api_key=key,
                    timeout=conn.timeout_seconds,
                    client=client,
                )
            except (OSError, ValueError) as exc:  # a scripted connection's file
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ConnectionError_(
                    f"model connection {name!r}: its script {conn.base_url} cannot be read ({why})"
                ) from None
            self._providers[cache_key] = found
        return found, chosen

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        for client in self._clients.values():
            await client.aclose()
        self._providers.clear()
        self._clients.clear()
