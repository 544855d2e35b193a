"""The worker's wiring of model connections and credentials from settings.

Activities never read settings for these: the worker builds the ``ModelRouter`` (named
connections, the credential resolver and its key) here and hands it in.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.ext.asyncio import async_sessionmaker

from vigil.activities.credentials import CredentialResolver, SecretBox, new_key_text, parse_key
from vigil.activities.models.base import ModelProvider
from vigil.activities.models.connections import (
    DEFAULT_CONNECTION,
    ModelConnection,
    ModelRouter,
    ProviderKind,
)
from vigil.schema.agents import NAME_PATTERN
from vigil.workers.settings import Settings

SECRET_KEY_FILE = "secret.key"


class ConfigError(ValueError):
    """Bad model connection or secret key configuration (a one-line message)."""


class ConnectionConfig(BaseModel):
    """One connection as configured (VIGIL_MODEL_CONNECTIONS or models.toml)."""

    model_config = ConfigDict(extra="forbid")

    kind: ProviderKind
    base_url: str | None = None
    model: str | None = None
    credential: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)


def _configured(settings: Settings) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if settings.models_file is not None:
        path = settings.models_file.expanduser()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"VIGIL_MODELS_FILE {path}: {exc}") from exc
        for key, value in data.items():
            if key != "connections":
                shown = f"[{key}]" if isinstance(value, dict) else repr(key)
                hint = f" (here [connections.{key}])" if isinstance(value, dict) else ""
                raise ConfigError(
                    f"VIGIL_MODELS_FILE {path}: {shown} is not a connection: write each as "
                    f"[connections.NAME]{hint}"
                )
        table = data.get("connections", {})
        if not isinstance(table, dict):
            raise ConfigError(f"VIGIL_MODELS_FILE {path}: [connections.NAME] tables expected")
        raw.update(table)
    if settings.model_connections:
        try:
            data = json.loads(settings.model_connections)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"VIGIL_MODEL_CONNECTIONS is not JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise ConfigError("VIGIL_MODEL_CONNECTIONS must be a JSON object of connections")
        raw.update(data)
    return raw


def model_connections(settings: Settings) -> dict[str, ModelConnection]:
    """Every named connection: ``default`` from VIGIL_MODEL_*, then the configured ones."""
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else None
    out = {
        DEFAULT_CONNECTION: ModelConnection(
            name=DEFAULT_CONNECTION,
            kind=settings.model_provider,
            base_url=settings.model_base_url,
            model=settings.model_name,
            timeout_seconds=settings.model_timeout_seconds,
            api_key=key,
        )
    }
    for name, value in _configured(settings).items():
        if not re.fullmatch(NAME_PATTERN, name):
            raise ConfigError(f"model connection name {name!r} is not a valid name")
        try:
            conf = ConnectionConfig.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(f"model connection {name!r}: {where}: {first.get('msg')}") from exc
        out[name] = ModelConnection(
            name=name,
            kind=conf.kind,
            base_url=conf.base_url,
            # A script answers whatever model is asked for: it needs no name.
            model=conf.model or ("scripted" if conf.kind == "scripted" else None),
            credential=conf.credential,
            timeout_seconds=conf.timeout_seconds,
        )
    return out


def secret_key_path(settings: Settings) -> Path:
    return settings.resolved_state_dir / SECRET_KEY_FILE


def secret_box(settings: Settings, *, create: bool = False) -> SecretBox | None:
    """The credentials key: VIGIL_SECRET_KEY, else the state folder's ``secret.key``
    (written here when ``create`` and absent, mode 0600)."""
    if settings.secret_key is not None:
        try:
            return SecretBox(parse_key(settings.secret_key.get_secret_value()))
        except ValueError as exc:
            raise ConfigError(f"VIGIL_SECRET_KEY: {exc}") from exc
    path = secret_key_path(settings)
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key_text() + "\n")
    try:
        return SecretBox(parse_key(path.read_text()))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def credential_resolver(
    settings: Settings, sessionmaker: async_sessionmaker[DbSession]
) -> CredentialResolver:
    """How a worker resolves credential names (model connections, MCP servers)."""
    # A bad key fails the worker's start; a missing one is looked for again at each use.
    box = secret_box(settings)
    return CredentialResolver(
        sessionmaker, box if box is not None else (lambda: secret_box(settings))
    )


def model_router(
    settings: Settings, default_provider: ModelProvider, credentials: CredentialResolver
) -> ModelRouter:
    """The router a worker's ``call_model`` uses."""
    return ModelRouter(model_connections(settings), credentials, default_provider=default_provider)
