"""How fast `vigil` starts: the wall time of `vigil --help` and of a control command that
fails at once (nothing listens), and how many modules each loads.

Prints figures; asserts nothing (tests/unit/test_cli_startup.py holds which modules load).

    uv run python -m bench.cli_startup --runs 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PROBE = """
import json, sys
sys.argv = ["vigil", *sys.argv[1:]]
from vigil.workers.cli import _run_app
_run_app()
print("\\nMODULES " + json.dumps(len(sys.modules)))
"""

COMMANDS = {
    "vigil --help": ["--help"],
    "vigil pause S (nothing listening)": ["pause", "s-1"],
    "python -c pass (the floor)": None,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")},
            "TEMPORAL_ADDRESS": "127.0.0.1:9",
            "DATABASE_URL": "postgresql://vigil:x@127.0.0.1:9/vigil",
            "VIGIL_STATE_DIR": state,
        }
        for label, argv in COMMANDS.items():
            cmd = [sys.executable, "-c", "pass"] if argv is None else [sys.executable, "-c", PROBE]
            times, modules = [], 0
            for _ in range(args.runs):
                began = time.perf_counter()
                done = subprocess.run(
                    [*cmd, *(argv or [])], env=env, capture_output=True, text=True, check=False
                )
                times.append(time.perf_counter() - began)
                if "MODULES " in done.stdout:
                    modules = json.loads(done.stdout.rsplit("MODULES ", 1)[1])
            print(
                f"{label:40} median {statistics.median(times) * 1000:7.0f} ms  "
                f"min {min(times) * 1000:7.0f} ms  modules {modules or '-'}"
            )


if __name__ == "__main__":
    main()
