"""A command run without the port variables `vigil stack up` was given reaches the stack
it started: the stack publishes its ports in stack.json, as it publishes its database URL.
Before, the CLI found the stack's PostgreSQL but looked for Temporal on 7233 ("Temporal
at 127.0.0.1:7233 is not answering; start it with `vigil stack up`"), linked to a UI on
8233, and `stack status` called every part down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vigil.workers.settings import STACK_FILE, STACK_PORTS, Settings

PORTS = {
    "temporal_port": 27233,
    "temporal_ui_port": 28233,
    "postgres_port": 25433,
    "minio_port": 29000,
    "minio_console_port": 29001,
    "codec_port": 28234,
    "api_port": 28240,
}


def _published(state: Path, **extra: object) -> None:
    state.mkdir(parents=True, exist_ok=True)
    info = {
        "database_url": "postgresql://u:p@127.0.0.1:25433/vigil",
        "temporal_address": "127.0.0.1:27233",
        "profile": "embedded",
        "ports": PORTS,
        **extra,
    }
    (state / STACK_FILE).write_text(json.dumps(info))


@pytest.fixture(autouse=True)
def _no_port_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STACK_PORTS:
        monkeypatch.delenv(f"VIGIL_{name.upper()}", raising=False)
    for name in ("VIGIL_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS", "VIGIL_TEMPORAL_UI_URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_stacks_ports_are_used_where_none_is_configured(tmp_path: Path) -> None:
    _published(tmp_path / ".vigil")
    settings = Settings(state_dir=tmp_path / ".vigil")
    assert {name: getattr(settings, name) for name in STACK_PORTS} == PORTS
    endpoints = settings.endpoints()
    assert endpoints.temporal_address == "127.0.0.1:27233"
    assert endpoints.temporal_ui == "http://127.0.0.1:28233"
    # A copy keeps them (the CLI and the tests copy settings with updates).
    assert settings.model_copy(update={"task_queue": "q"}).temporal_port == 27233


def test_a_port_configured_here_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _published(tmp_path / ".vigil")
    monkeypatch.setenv("VIGIL_TEMPORAL_PORT", "7300")
    settings = Settings(state_dir=tmp_path / ".vigil", api_port=9999)
    assert (settings.temporal_port, settings.api_port) == (7300, 9999)
    assert settings.postgres_port == 25433
    assert settings.endpoints().temporal_address == "127.0.0.1:7300"


def test_a_stack_file_without_ports_or_unreadable_changes_nothing(tmp_path: Path) -> None:
    _published(tmp_path / "old", ports=None)
    assert Settings(state_dir=tmp_path / "old").temporal_port == 7233
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / STACK_FILE).write_text("{not json")
    assert Settings(state_dir=tmp_path / "bad").temporal_port == 7233
    assert Settings(state_dir=tmp_path / "none").temporal_port == 7233


def test_a_database_or_object_store_port_configured_here_wins_over_the_published_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``VIGIL_POSTGRES_PORT`` lost to the database URL in stack.json: commands reached
    the stack's PostgreSQL on its old port while `stack status` called PostgreSQL down
    on the port given."""
    _published(tmp_path / ".vigil", s3_endpoint="127.0.0.1:29000")
    monkeypatch.setenv("VIGIL_POSTGRES_PORT", "25499")
    monkeypatch.setenv("VIGIL_MINIO_PORT", "29999")
    endpoints = Settings(state_dir=tmp_path / ".vigil").endpoints()
    assert endpoints.database_url == "postgresql://u:p@127.0.0.1:25499/vigil"
    assert endpoints.s3_endpoint == "127.0.0.1:29999"
    # Unset, the published ones stand; a DATABASE_URL given wins over both.
    monkeypatch.delenv("VIGIL_POSTGRES_PORT")
    monkeypatch.delenv("VIGIL_MINIO_PORT")
    endpoints = Settings(state_dir=tmp_path / ".vigil").endpoints()
    assert endpoints.database_url == "postgresql://u:p@127.0.0.1:25433/vigil"
    assert endpoints.s3_endpoint == "127.0.0.1:29000"
    monkeypatch.setenv("VIGIL_POSTGRES_PORT", "25499")
    given = "postgresql://x@db.internal:5432/v"
    assert (
        Settings(state_dir=tmp_path / ".vigil", database_url=given).endpoints().database_url
        == given
    )
