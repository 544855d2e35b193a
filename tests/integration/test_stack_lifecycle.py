"""`vigil stack` keeps data across down/up, and a taken port gives one clear line."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import ROOT
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack, StackError
from vigil.workers.stack.procs import pid_alive
from vigil.workers.temporal import connect

pytestmark = pytest.mark.integration

PORTS = {
    "temporal_port": 27233,
    "temporal_ui_port": 28233,
    "postgres_port": 25433,
    "codec_port": 28234,
    "api_port": 28240,
}


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder outside pytest's base temp: PostgreSQL runs as another user and needs every
    parent traversable, and a parallel pytest process resets the base temp to mode 0700."""
    folder = Path(tempfile.mkdtemp(prefix="vigil-stack-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(Settings(state_dir=tmp_path / "state", **PORTS))  # type: ignore[arg-type]
    yield stack
    stack.down()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil.workers.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=180,
    )


def test_down_then_up_keeps_temporal_and_postgres_data(own_stack: Stack) -> None:
    own_stack.up()
    workflow_id = f"kept-{uuid.uuid4()}"
    url = own_stack.settings.endpoints().database_url
    assert url is not None

    async def write() -> None:
        client = await connect(own_stack.settings)
        await client.start_workflow("never.Registered", id=workflow_id, task_queue="nobody")
        conn = await asyncpg.connect(url)
        await conn.execute("INSERT INTO agents (id, name) VALUES ($1, 'kept')", workflow_id)
        await conn.close()

    asyncio.run(write())
    # The stack's API is up on its port and answers over the migrated record.
    ready = httpx.get(f"{own_stack.api.url}/v1/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert {p.name for p in own_stack.status() if p.running} >= {"temporal", "postgres", "api"}
    pids = {
        "temporal": own_stack.temporal.pid(),
        "postgres": own_stack.postgres.pid(),
        "api": own_stack.api.pid(),
    }
    own_stack.down()
    # Down means gone: each process has exited once down returns.
    assert [name for name, pid in pids.items() if pid is not None and pid_alive(pid)] == []
    own_stack.up()

    async def read() -> tuple[str, str]:
        client = await connect(own_stack.settings)
        desc = await client.get_workflow_handle(workflow_id).describe()
        conn = await asyncpg.connect(url)
        name = await conn.fetchval("SELECT name FROM agents WHERE id = $1", workflow_id)
        await conn.close()
        return desc.workflow_type, name

    assert asyncio.run(read()) == ("never.Registered", "kept")


def test_taken_port_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _cli(
            "stack",
            "up",
            env={
                "VIGIL_STATE_DIR": str(tmp_path / "state"),
                "VIGIL_TEMPORAL_PORT": str(port),
                "VIGIL_TEMPORAL_UI_PORT": "28299",
                "VIGIL_POSTGRES_PORT": "25499",
            },
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1
    assert f"port {port} (Temporal) is taken" in error_lines[0]
    assert "VIGIL_TEMPORAL_PORT" in error_lines[0]


def test_taken_postgres_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = Stack(
            Settings(
                state_dir=tmp_path / "s",
                temporal_address="127.0.0.1:1",  # type: ignore[arg-type]
                postgres_port=port,
            )
        )
        with pytest.raises(StackError, match=f"port {port} \\(PostgreSQL\\) is taken"):
            stack.up()
        stack.down()


def test_failed_go_build_names_the_fix(tmp_path: Path) -> None:
    """No temporal on PATH and a Go toolchain that cannot build: one line that says what to do."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "go").write_text("#!/bin/sh\necho 'go: module lookup disabled' >&2\nexit 1\n")
    (fake_bin / "go").chmod(0o755)
    result = _cli(
        "stack",
        "up",
        env={
            "PATH": f"{fake_bin}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "VIGIL_STATE_DIR": str(tmp_path / "state"),
            "VIGIL_BIN_CACHE": str(tmp_path / "cache"),
            "VIGIL_TEMPORAL_PORT": "27299",
            "VIGIL_TEMPORAL_UI_PORT": "28298",
        },
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "go install github.com/temporalio/cli/cmd/temporal@v1.5.1" in result.stderr
    assert "put a temporal binary on PATH" in result.stderr
