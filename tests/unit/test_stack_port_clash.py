"""`vigil stack up` with two of its parts on one port says so before it starts anything:
the dev server's HTTP port (the Temporal port + 10) met the API's, which then failed to
start naming "another process", with Temporal, the codec server and PostgreSQL left up."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.stack.procs import StackError


def _stack(tmp_path: Path, **ports: int) -> Stack:
    # Every part embedded, whatever the environment running the test says.
    embedded = {"database_url": None, "temporal_address": None, "s3_endpoint": None}
    settings = Settings(state_dir=str(tmp_path / "state"), api_in_stack=True, **embedded, **ports)  # type: ignore[arg-type]
    return Stack(settings)


def test_ports_two_parts_would_share_are_refused_before_anything_starts(tmp_path: Path) -> None:
    stack = _stack(tmp_path, temporal_port=27300, api_port=27310)
    with pytest.raises(StackError) as refused:
        stack.up()
    said = str(refused.value)
    assert "port 27310 would be both Temporal's HTTP (VIGIL_TEMPORAL_PORT + 10)" in said
    assert "the HTTP API (VIGIL_API_PORT)" in said and "nothing was started" in said
    assert not (tmp_path / "state").exists()
    clash = _stack(tmp_path, postgres_port=28000, minio_console_port=28000, with_minio=True)
    with pytest.raises(StackError, match="port 28000 would be both PostgreSQL"):
        clash.up()


def test_the_defaults_and_spread_ports_bind_each_port_once(tmp_path: Path) -> None:
    for stack in (
        _stack(tmp_path, with_minio=True),
        _stack(tmp_path, temporal_port=27233, api_port=27240, with_minio=True),
    ):
        ports = [port for port, _ in stack.ports()]
        assert len(ports) == len(set(ports)) and len(ports) >= 8
