"""The probe MCP server (tests/support/mcp_servers/probe_server.py) as agent-file specs,
and its HTTP flavour as a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from vigil.schema.agents import McpServerSpec

SERVER = Path(__file__).resolve().parent / "mcp_servers" / "probe_server.py"


def stdio_spec(name: str = "probe", **extra: Any) -> McpServerSpec:
    return McpServerSpec(name=name, command=[sys.executable, str(SERVER)], **extra)


class HttpProbe:
    """The probe server over streamable HTTP; ``restart()`` brings it back on its port."""

    def __init__(self, log_path: Path, token: str | None = None) -> None:
        self.log_path = log_path
        self.token = token
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def spec(self, name: str = "web", credential: str | None = None, **extra: Any) -> McpServerSpec:
        return McpServerSpec(name=name, url=self.url, credential=credential, **extra)

    def start(self) -> HttpProbe:
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        args = [sys.executable, str(SERVER), "--http", "--port", str(self.port)]
        if self.token:
            args += ["--token", self.token]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), f"the MCP server did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> HttpProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
