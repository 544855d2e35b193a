"""`vigil doctor` names each worker of the queue with when Temporal last heard from it
(it counted workers stopped a minute before as polling, unexplained), and fails a queue
whose workers load different tools: a session's tool call went to a worker without the
tool, which told the model it was not loaded, while `doctor` said all was well."""

from __future__ import annotations

import json
import re
import socket
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import CLIStack
from tests.support.cli import WorkerProcess

pytestmark = pytest.mark.integration


def _workers(cli: CLIStack, queue: str) -> dict[str, object]:
    done = cli.vigil("doctor", "--json", env={"VIGIL_TASK_QUEUE": queue}, timeout=180)
    checks = json.loads(done.stdout)
    (found,) = [c for c in checks if str(c["check"]).startswith("workers on task queue")]
    return dict(found)


@pytest.mark.timeout(600)
def test_workers_of_one_queue_that_load_different_tools_fail_the_check(
    cli: CLIStack, tmp_path: Path
) -> None:
    queue = f"tq-tools-{uuid.uuid4().hex[:8]}"
    env = {**cli.vigil.env, "VIGIL_TASK_QUEUE": queue}
    plain = WorkerProcess(env, tmp_path / "plain.log").start()
    with_tools = WorkerProcess(env, tmp_path / "tools.log", ["--tools", "tests.support.py_tools"])
    try:
        alone = _workers(cli, queue)
        assert alone["ok"] is True, alone
        assert plain.proc is not None
        pattern = rf"1 polling: {plain.proc.pid}@\S+ \(tools [0-9a-f]{{8}}, seen \d+ s ago\)"
        assert re.fullmatch(pattern, str(alone["detail"])), alone
        with_tools.start()
        both = _workers(cli, queue)
        assert both["ok"] is False, both
        detail = str(both["detail"])
        assert detail.startswith("2 polling: "), detail
        assert "they load 2 different sets of tools" in detail, detail
        assert "give each set its own --task-queue" in detail, detail
    finally:
        for worker in (plain, with_tools):
            if worker.proc is not None:
                assert worker.stop() == 0, worker.log()


@pytest.mark.timeout(600)
def test_a_worker_that_died_is_not_counted_as_polling(cli: CLIStack, tmp_path: Path) -> None:
    """Temporal lists a killed worker for a while: `doctor` said it polled, and the check
    passed, while no session could move."""
    queue = f"tq-gone-{uuid.uuid4().hex[:8]}"
    env = {**cli.vigil.env, "VIGIL_TASK_QUEUE": queue}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    assert worker.proc is not None
    pid = worker.proc.pid
    try:
        assert _workers(cli, queue)["ok"] is True
        worker.proc.kill()
        worker.proc.wait()
        found = _workers(cli, queue)
    finally:
        worker.stop()  # closes its log
    detail = str(found["detail"])
    assert found["ok"] is False, found
    assert detail.startswith(f"no worker is polling task queue {queue!r}"), detail
    pattern = rf"Temporal still lists 1 whose process no longer runs \({pid}@\S+\)$"
    assert re.search(pattern, detail), detail


def test_doctor_asks_the_stacks_api_for_its_health(cli: CLIStack) -> None:
    """`doctor` checked every part but the HTTP API: with the API killed it passed."""

    def api_row(env: dict[str, str]) -> dict[str, object]:
        done = cli.vigil("doctor", "--json", env=env, timeout=180)
        (row,) = [c for c in json.loads(done.stdout) if c["part"] == "api"]
        return dict(row)

    up = api_row({})
    assert up["ok"] is True and str(up["detail"]).endswith("/v1 (HTTP 200)"), up
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    down = api_row({"VIGIL_API_PORT": str(port)})  # nothing listens there
    assert down["ok"] is False, down
    assert str(down["detail"]).startswith(f"not answering at http://127.0.0.1:{port}/v1 ("), down
    assert str(down["detail"]).endswith("`vigil stack up` starts it"), down
