"""Model connections from settings: VIGIL_MODEL_* is `default`, more come from
VIGIL_MODEL_CONNECTIONS (JSON) or a models.toml; bad ones are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from vigil.workers.models import ConfigError, model_connections, secret_box
from vigil.workers.settings import Settings


def test_default_and_configured(tmp_path: Path) -> None:
    toml = tmp_path / "models.toml"
    toml.write_text(
        '[connections.claude]\nkind = "anthropic"\nmodel = "claude-x"\n'
        'credential = "env:ANTHROPIC_API_KEY"\n'
    )
    settings = Settings(  # type: ignore[call-arg]
        model_provider="openai",
        model_name="gpt-x",
        model_api_key=SecretStr("sk-inline"),
        models_file=toml,
        model_connections=json.dumps({"local": {"kind": "openai", "base_url": "http://h/v1"}}),
    )
    found = model_connections(settings)
    assert sorted(found) == ["claude", "default", "local"]
    assert (found["default"].kind, found["default"].model) == ("openai", "gpt-x")
    assert found["claude"].credential == "env:ANTHROPIC_API_KEY"
    assert found["local"].base_url == "http://h/v1" and found["local"].model is None
    assert "sk-inline" not in repr(found["default"])


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{not json", "VIGIL_MODEL_CONNECTIONS is not JSON"),
        ('{"x": {"kind": "gemini"}}', "model connection 'x': kind:"),
        ('{"x": {"kind": "openai", "apikey": "k"}}', "model connection 'x': apikey:"),
        ('{"bad name": {"kind": "openai"}}', "is not a valid name"),
    ],
)
def test_bad_connections(raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        model_connections(Settings(model_connections=raw))  # type: ignore[call-arg]


def test_secret_key_from_settings_or_state_dir(tmp_path: Path) -> None:
    assert secret_box(Settings(state_dir=tmp_path)) is None  # type: ignore[call-arg]
    made = secret_box(Settings(state_dir=tmp_path), create=True)  # type: ignore[call-arg]
    assert made is not None and (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
    again = secret_box(Settings(state_dir=tmp_path))  # type: ignore[call-arg]
    assert again is not None and again.key_id == made.key_id
    with pytest.raises(ConfigError, match="VIGIL_SECRET_KEY"):
        secret_box(Settings(secret_key=SecretStr("short")))  # type: ignore[call-arg]


def test_a_models_file_table_outside_connections_is_refused(tmp_path: Path) -> None:
    """``[stub]`` instead of ``[connections.stub]`` was read as no connection at all: the
    worker started, doctor said ok, and each session of an agent naming the connection
    waited for it without end."""
    toml = tmp_path / "models.toml"
    toml.write_text('[stub]\nkind = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n')
    with pytest.raises(ConfigError) as refused:
        model_connections(Settings(models_file=toml))  # type: ignore[call-arg]
    assert str(refused.value) == (
        f"VIGIL_MODELS_FILE {toml}: [stub] is not a connection: write each as "
        "[connections.NAME] (here [connections.stub])"
    )
    toml.write_text('kind = "openai"\n')
    with pytest.raises(ConfigError, match=r"'kind' is not a connection: write each as"):
        model_connections(Settings(models_file=toml))  # type: ignore[call-arg]


async def test_a_scripted_connection_needs_no_model(tmp_path: Path) -> None:
    """A scripted connection without a ``model`` left every session's call waiting for a
    worker set up for it ("has no default model: name one"): a script answers whatever
    model is asked, and the router now gives it one."""
    from vigil.activities.models.connections import ModelRouter
    from vigil.activities.models.scripted import ScriptedProvider

    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"say": "played"}]))
    conf = {"mine": {"kind": "scripted", "base_url": script.as_uri()}}
    found = model_connections(Settings(state_dir=tmp_path, model_connections=json.dumps(conf)))
    router = ModelRouter(found, None, default_provider=None)
    provider, model = await router.provider("mine")
    assert isinstance(provider, ScriptedProvider) and model == "scripted"
