"""Helpers for API tests that run sessions: the API over a `cli` fixture's worker, agents
applied through the API, and waits that read the record through the API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.integration.conftest import CLIStack
from tests.support.api import ApiServer, running_api
from tests.support.cli import poll


@contextmanager
def api_for(cli: CLIStack) -> Iterator[ApiServer]:
    """The API on the `cli` worker's task queue; sessions need an agent definition."""
    settings = cli.settings.model_copy(update={"allow_undefined_agents": False})
    with running_api(settings) as server:
        yield server


def agent_yaml(name: str, *, approve: str = "http_fetch", max_steps: int = 5) -> str:
    return (
        f"name: {name}\n"
        "system_prompt: 'Careful agent. Goal: {goal}'\n"
        f"tools:\n  - name: {approve}\n    approval: always\n"
        f"budget:\n  max_steps: {max_steps}\n"
    )


def define(http: httpx.Client, prefix: str = "api") -> str:
    """A new agent, applied through ``POST /v1/agents`` (an admin token's client)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    r = http.post(
        "/v1/agents", content=agent_yaml(name), headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    return name


def session(http: httpx.Client, session_id: str) -> dict[str, Any]:
    r = http.get(f"/v1/sessions/{session_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_status(http: httpx.Client, session_id: str, status: str, within: float = 30) -> Any:
    def probe() -> Any:
        r = http.get(f"/v1/sessions/{session_id}", params={"last": 0})
        if r.status_code != 200:
            return None
        body = r.json()
        return body if body["session"]["status"] == status else None

    return poll(probe, within, f"{session_id} is {status}", every=0.2)


def wait_pending(http: httpx.Client, session_id: str, within: float = 30) -> dict[str, Any]:
    """The session's first pending approval in the inbox, once there."""

    def probe() -> Any:
        items = http.get("/v1/approvals").json()["items"]
        mine = [a for a in items if a["session_id"] == session_id]
        return mine[0] if mine else None

    found: dict[str, Any] = poll(probe, within, f"{session_id} waits for approval", every=0.2)
    return found
