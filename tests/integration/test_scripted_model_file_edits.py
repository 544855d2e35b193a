"""The scripted model plays its script file as it is now: a file edited while the worker
runs (its modification time or size changed) is read again for the next model call, so a
new session plays the new script without a worker restart."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import WorkerProcess

pytestmark = pytest.mark.integration


def _write(path: Path, script: list[dict[str, object]]) -> None:
    path.write_text(json.dumps(script), encoding="utf-8")


@pytest.mark.timeout(300)
def test_an_edited_script_is_played_by_new_sessions(
    cli: CLIStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("scripted")
    script = tmp / "script.json"
    _write(script, [{"tool": "finish", "args": {"summary": "the first script"}}])
    queue = f"tq-scripted-{uuid.uuid4().hex[:8]}"
    env = {
        "VIGIL_TASK_QUEUE": queue,
        "VIGIL_MODEL_PROVIDER": "scripted",
        "VIGIL_MODEL_BASE_URL": script.as_uri(),
        "VIGIL_MODEL_NAME": "scripted-1",
    }
    worker = WorkerProcess({**cli.vigil.env, **env}, tmp / "worker.log").start()
    try:
        agent = f"scripted-{uuid.uuid4().hex[:8]}"
        first = cli.vigil.json("start", "one", "--agent", agent, "--wait", env=env, timeout=120)
        assert first["status"] == "completed", first
        assert cli.vigil.json("show", first["id"], env=env)["session"]["summary"] == (
            "the first script"
        )

        _write(script, [{"say": "a reply from the edited script"}])
        os.utime(script, ns=(1, 1))  # a changed size or time is enough, even a time set back
        second = cli.vigil.json("start", "two", "--agent", agent, "--wait", env=env, timeout=120)
        assert second["status"] == "completed", second
        shown = cli.vigil.json("show", second["id"], env=env)
        assert shown["session"]["summary"] == "a reply from the edited script", shown["session"]
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
