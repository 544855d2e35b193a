"""A worker's log written to a file carries no colour codes from Temporal's core either
(the Rust core logs by itself, coloured unless NO_COLOR is set when its runtime starts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

SCRIPT = """
import asyncio, sys
from temporalio import activity
from temporalio.client import Client
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Worker
from vigil.workers.logs import configure

configure("console", "INFO")  # as `vigil worker` does first


@activity.defn
async def noop() -> None: ...


async def main() -> None:
    # Core INFO lines (a worker starting and stopping) stand in for its warnings.
    chatty = LoggingConfig(filter=TelemetryFilter(core_level="INFO", other_level="INFO"))
    runtime = Runtime(telemetry=TelemetryConfig(logging=chatty))
    client = await Client.connect(sys.argv[1], runtime=runtime)
    worker = Worker(client, task_queue="core-log-plain", activities=[noop])

    async def stop() -> None:
        await asyncio.sleep(1)
        await worker.shutdown()

    await asyncio.gather(worker.run(), stop())


asyncio.run(main())
"""


def test_core_log_lines_in_a_file_are_plain(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no NO_COLOR of the caller's
    with log.open("w") as handle:
        subprocess.run(
            [sys.executable, "-c", SCRIPT, stack.settings.endpoints().temporal_address],
            stdout=handle,
            stderr=handle,
            env=env,
            timeout=120,
        )
    text = log.read_text()
    assert "Initializing worker" in text, text
    assert "\x1b[" not in text, text
