"""CPU seconds spent by the test stack's processes and this one, read from /proc.

On this shared two-core machine the rates of a burst move with whatever else runs; the
CPU each process spends on the burst moves far less. ``StackCPU`` reads it for this
process (the worker and the bench's client), the Temporal server, and PostgreSQL (the
postmaster, its live backends, and the backends it has already reaped), so a bench can
print CPU per workflow beside its rates. The LLM stub, in a process of its own as an
external LLM would be, is not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.stack.procs import read_pid

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def _seconds(fields: list[str], *, reaped: bool) -> float:
    # After the name: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _tree_seconds(root: int) -> float:
    """``root``'s CPU, its reaped children's, and its live children's."""
    fields = _stat(root)
    if fields is None:
        return 0.0
    total = _seconds(fields, reaped=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        child = _stat(int(entry.name))
        if child is not None and child[1] == str(root):
            total += _seconds(child, reaped=False)
    return total


@dataclass(frozen=True)
class CPU:
    worker: float
    temporal: float
    postgres: float

    @property
    def total(self) -> float:
        return self.worker + self.temporal + self.postgres

    def __sub__(self, other: CPU) -> CPU:
        return CPU(
            self.worker - other.worker,
            self.temporal - other.temporal,
            self.postgres - other.postgres,
        )

    def per(self, count: int) -> CPU:
        """Milliseconds per one of ``count``."""
        return CPU(*(1000 * v / count for v in (self.worker, self.temporal, self.postgres)))

    def __str__(self) -> str:
        return (
            f"{self.total:.1f} (worker {self.worker:.1f}, Temporal {self.temporal:.1f}, "
            f"PostgreSQL {self.postgres:.1f})"
        )


class StackCPU:
    """Reads CPU seconds of this process and of the embedded stack that ``settings``
    name (its Temporal server and PostgreSQL); a part that is not running reads 0."""

    def __init__(self, settings: Settings) -> None:
        stack = Stack(settings)
        self._temporal = read_pid(stack.temporal.pid_file)
        self._postgres = stack.postgres.pid()

    def read(self) -> CPU:
        own = os.times()
        temporal = self._temporal
        postgres = self._postgres
        return CPU(
            own.user + own.system,
            _tree_seconds(temporal) if temporal else 0.0,
            _tree_seconds(postgres) if postgres else 0.0,
        )
