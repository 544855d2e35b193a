"""`vigil api --tools M` and `vigil stack up --tools M` give the API the Python tools of
``M``, as `vigil worker --tools M` gives them to a worker: an agent naming one of them is
applied over HTTP with the tool described, where without the option it is refused."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.api import free_port
from tests.support.cli import CLI, Vigil, cli_env, explain, poll
from vigil.workers.stack import Stack

pytestmark = pytest.mark.integration

TOOLS = "tests.support.py_tools"
TOML = {"Content-Type": "application/toml"}


@pytest.fixture(scope="module")
def vigil(stack: Stack, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Vigil:
    return Vigil(
        cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue="unused",
            model_url="http://127.0.0.1:9/v1",
            artifact_dir=tmp_path_factory.mktemp("artifacts"),
        )
    )


def admin_token(vigil: Vigil) -> str:
    made = vigil.json("token", "create", "--owner", "tools-test", "--scope", "admin")
    token: str = made["token"]
    return token


def uses_word_count(base_url: str, token: str) -> httpx.Response:
    """Apply a new agent that names the Python tool ``word_count``."""
    name = f"tooled-{uuid.uuid4().hex[:8]}"
    definition = f'name = "{name}"\n[[tools]]\nname = "word_count"\n'
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        applied = http.post("/v1/agents", content=definition, headers=TOML)
        if applied.status_code == 201:
            shown = http.get(f"/v1/agents/{name}").json()
            assert {"name": "word_count", "kind": "python"}.items() <= next(
                t for t in shown["tools"] if t["name"] == "word_count"
            ).items(), shown
        return applied


@contextmanager
def served(vigil: Vigil, *options: str) -> Iterator[str]:
    """`vigil api OPTIONS` on a free port until the block ends; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "api", "--port", str(port), *options],
        env=vigil.env,
        cwd=vigil.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"vigil api exited {proc.returncode}: {out[-2000:]}")
            try:
                return httpx.get(f"{base}/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, 60, "vigil api answers", every=0.2)
        yield base
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # reaps it and closes its output pipe


def test_vigil_api_takes_tool_modules_like_the_worker(vigil: Vigil) -> None:
    token = admin_token(vigil)
    with served(vigil) as base:
        refused = uses_word_count(base, token)
        assert refused.status_code == 422, refused.text
        assert "word_count" in refused.json()["error"]["message"]
    with served(vigil, "--tools", TOOLS) as base:
        applied = uses_word_count(base, token)
        assert applied.status_code == 201, applied.text


def test_vigil_stack_up_gives_its_api_the_tool_modules(vigil: Vigil) -> None:
    token = admin_token(vigil)
    # A state folder of its own whose Temporal and PostgreSQL are the test stack's
    # (TEMPORAL_ADDRESS, DATABASE_URL): `stack up` starts only the API there.
    state = Path(tempfile.mkdtemp(prefix="vigil-api-tools-"))
    port = free_port()
    env = {"VIGIL_API_PORT": str(port)}
    try:
        up = vigil("stack", "up", "--state-dir", str(state), "--tools", TOOLS, env=env, timeout=120)
        assert up.returncode == 0, explain(up)
        applied = uses_word_count(f"http://127.0.0.1:{port}", token)
        assert applied.status_code == 201, applied.text
    finally:
        down = vigil("stack", "down", "--state-dir", str(state), env=env)
        assert down.returncode == 0, explain(down)
        shutil.rmtree(state, ignore_errors=True)
