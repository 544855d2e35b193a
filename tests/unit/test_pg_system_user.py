"""The system user the embedded PostgreSQL runs as (when vigil runs as root) is created
once, even when several stacks start at the same moment on a fresh machine (the test
stack, the cluster stack and a developer's stack): none of them fails on the race."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="creating a system user needs root (as the stack does)"
)

RACE = """
import sys, time
from vigil.workers.stack.postgres import ensure_system_user
start = float(sys.argv[2])
while time.time() < start:
    pass
ensure_system_user(sys.argv[1])
"""


def test_stacks_starting_at_once_create_the_user_once() -> None:
    name = f"vigilpg-t{secrets.token_hex(3)}"
    try:
        for _ in range(3):  # a race may be won cleanly once; it is run a few times
            subprocess.run(["userdel", name], capture_output=True, check=False)
            at = str(time.time() + 1.5)
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", RACE, name, at],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(6)
            ]
            failures = []
            for proc in procs:
                _out, err = proc.communicate(timeout=60)
                if proc.returncode != 0:
                    failures.append(err.strip().splitlines()[-1:])
            assert failures == []
            entry = pwd.getpwnam(name)
            with open("/etc/passwd", encoding="utf-8") as passwd:
                assert sum(line.startswith(f"{name}:") for line in passwd) == 1
            assert entry.pw_shell == "/usr/sbin/nologin"
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
