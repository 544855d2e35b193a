"""The CLI starts light: `vigil --help` imports typer and rich and nothing of the stack, and
a control command imports the client but not the migrations, the worker, the logging or
the HTTP API. Checked by the modules a real `vigil` process has loaded (not by a clock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Runs the CLI as `vigil ARGS` in-process, then prints the modules it loaded.
PROBE = """
import json, sys
sys.argv = ["vigil", *sys.argv[1:]]
from vigil.workers.cli import _run_app
code = _run_app()
print("\\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# Never needed to start any command; each costs tenths of a second to import.
NEVER = ("alembic", "mako", "structlog", "fastapi", "uvicorn", "temporalio.worker")
# Telemetry costs nothing unless configured: no collector, no OpenTelemetry at all.
UNTRACED = ("opentelemetry", "prometheus_client", "vigil.workers.tracing")


def _loaded(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIGIL_", "OTEL_")) and k not in ("TEMPORAL_ADDRESS", "DATABASE_URL")
    }
    # Nothing listens on port 9: a command that connects fails at once with exit 3.
    env.update(
        TEMPORAL_ADDRESS="127.0.0.1:9",
        DATABASE_URL="postgresql://vigil:x@127.0.0.1:9/vigil",
        VIGIL_STATE_DIR=str(tmp_path / "state"),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = done.stdout.rsplit("MODULES ", 1)
    assert len(line) == 2, done.stderr
    report = json.loads(line[1])
    return int(report["code"]), set(report["modules"])


def _under(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_help_imports_only_typer_and_rich(tmp_path: Path) -> None:
    code, modules = _loaded(tmp_path, "--help")
    assert code == 0
    heavy = (
        "sqlalchemy",
        "temporalio",
        "pydantic",
        "pydantic_settings",
        "cryptography",
        "httpx",
        "asyncpg",
        "vigil.activities",
        "vigil.schema",
        "vigil.workers.client",
        "vigil.workers.settings",
        *NEVER,
        *UNTRACED,
    )
    assert _under(modules, *heavy) == []
    assert "typer" in modules and "vigil.workers.cli.control" in modules


def test_a_command_group_help_is_as_light(tmp_path: Path) -> None:
    code, modules = _loaded(tmp_path, "schedule", "create", "--help")
    assert code == 0
    assert _under(modules, "sqlalchemy", "temporalio", "vigil.workers.client") == []


def test_a_control_command_imports_the_client_and_no_more(tmp_path: Path) -> None:
    code, modules = _loaded(tmp_path, "pause", "s-1")
    assert code == 3  # nothing to reach: the client was built and tried
    assert "vigil.workers.client" in modules and "temporalio.client" in modules
    assert _under(modules, *NEVER, *UNTRACED) == []
    # Temporal alone carries a control: the record's SQLAlchemy and the tools' HTTP
    # client are imported by the commands that read the record or fetch.
    assert _under(modules, "sqlalchemy", "httpx", "vigil.activities.record") == []


def test_version_is_told_and_starts_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.startswith("vigil 0.") or done.stdout.startswith("vigil ("), done.stdout
    code, modules = _loaded(tmp_path, "--version")
    assert code == 0 and not _under(modules, *NEVER, "sqlalchemy", "vigil.activities")
