"""What a Python script's logging writes to a file, as a worker's `2> worker.log` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def logged_by(script: str, tmp_path: Path) -> str:
    """Run ``script`` in a fresh interpreter, its stdout and stderr to a file; that file."""
    log = tmp_path / "worker.log"
    with log.open("w") as handle:
        subprocess.run(
            [sys.executable, "-c", script], stderr=handle, stdout=handle, check=True, timeout=60
        )
    return log.read_text()
