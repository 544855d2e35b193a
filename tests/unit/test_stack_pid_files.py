"""A pid file left by a crash or a reboot can name a pid the system has given to another
process since: the stack took that process for its own (``stack up`` skipped the start
and then waited for a server that was not there) and ``stack down`` sent SIGTERM, then
SIGKILL, to it and its process group. A pid file now records its process's start, and a
pid whose process started at another time is no longer the stack's."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.workers.stack.postgres import EmbeddedPostgres
from vigil.workers.stack.procs import pid_alive, read_pid, spawn, started_at, terminate


@pytest.fixture
def stranger() -> Iterator[int]:
    """A process that is not the stack's."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_file_naming_a_process_started_at_another_time_names_none(
    tmp_path: Path, stranger: int
) -> None:
    pid_file = tmp_path / "temporal.pid"
    pid_file.write_text(f"{stranger}\n1\n")  # the pid, reused: its process started later
    assert read_pid(pid_file) is None
    pid_file.write_text(f"{stranger}\n{started_at(stranger)}\n")
    assert read_pid(pid_file) == stranger
    pid_file.write_text(f"{stranger}\n")  # written before starts were recorded
    assert read_pid(pid_file) == stranger


def test_a_spawned_process_records_its_start(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "sleeper.pid"
    pid = spawn(["sleep", "60"], log_path=tmp_path / "sleeper.log", pid_path=pid_file)
    try:
        assert pid_file.read_text().split() == [str(pid), started_at(pid)]
        assert read_pid(pid_file) == pid
    finally:
        terminate(pid, timeout=5)
    assert not pid_alive(pid)


def test_a_postmaster_pid_file_naming_another_process_is_stale(
    tmp_path: Path, stranger: int
) -> None:
    server = EmbeddedPostgres(tmp_path, 1)
    server.data.mkdir(parents=True)
    lock = server.data / "postmaster.pid"
    lock.write_text(f"{stranger}\n{server.data}\n")
    assert not server.running()
    server.stop()  # nothing of ours runs: the stranger is left alone
    assert pid_alive(stranger)
    server._clear_stale_pid()
    assert not lock.exists()


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("temporal.internal", "temporal.internal", 7233),  # a traceback (ValueError)
        ("[::1]:7234", "::1", 7234),  # asked of "[::1]", which no connection reaches
        ("10.0.0.5:7233", "10.0.0.5", 7233),
        ("host:notaport", "host", None),
    ],
)
def test_an_external_temporal_address_is_read_as_host_and_port(
    address: str, host: str, port: int | None
) -> None:
    from vigil.workers.stack import _host_port

    assert _host_port(address, 7233) == (host, port)


def test_two_ups_in_one_state_folder_take_turns(tmp_path: Path) -> None:
    """Two `stack up`s at once both found a part down and started it (the second unlinked
    the first's pid file, orphaning a server), or one wiped the data folder the other was
    initialising: `up` and `down` hold a lock on the state folder."""
    import threading
    import time

    from vigil.workers.settings import Settings
    from vigil.workers.stack import Stack

    spans: list[tuple[float, float]] = []

    def slow(_self: Stack) -> None:
        began = time.monotonic()
        time.sleep(0.3)
        spans.append((began, time.monotonic()))

    stacks = [Stack(Settings(state_dir=tmp_path)) for _ in range(2)]  # type: ignore[call-arg]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Stack, "_up", slow)
        threads = [threading.Thread(target=s.up) for s in stacks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    first, second = sorted(spans)
    assert first[1] <= second[0], spans
