"""The API while PostgreSQL or Temporal is away answers 503 ``unavailable``, naming what
is away, as its error list promises: a client retries a 503 later. Every route that reads
a token answered 500 with PostgreSQL away (the token's check failed first), and routes that
reach Temporal answered 500 or 400 ``invalid_request`` (which says: do not retry)."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from pydantic import SecretStr

from tests.support.api import ApiServer, running_api
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once this returns


def unavailable(r: httpx.Response, part: str) -> None:
    assert r.status_code == 503, (r.request.method, r.request.url, r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == "unavailable", error
    assert part in error["message"], error


def test_postgres_away_is_a_503(settings: Settings) -> None:
    url = settings.endpoints().database_url
    assert url is not None
    token = ApiServer(base_url="", settings=settings, app=None).token(Scope.ADMIN)
    away = url.rsplit("@", 1)[0] + f"@127.0.0.1:{_closed_port()}/vigil"
    gone = settings.model_copy(update={"database_url": SecretStr(away)})
    with running_api(gone) as api, httpx.Client(base_url=api.base_url, timeout=30) as http:
        bearer = {"Authorization": f"Bearer {token}"}
        unavailable(http.get("/v1/me", headers=bearer), "PostgreSQL")
        unavailable(http.get("/v1/sessions?limit=1", headers=bearer), "PostgreSQL")
        unavailable(http.post("/v1/sessions/s/pause", headers=bearer, json={}), "PostgreSQL")
        # A body the route cannot read asks who the caller is first: that read is away.
        for body in (b"{bad", b"[" * 5000):
            sent = {**bearer, "Content-Type": "application/json"}
            unavailable(http.post("/v1/sessions", headers=sent, content=body), "PostgreSQL")


def test_temporal_away_is_a_503(settings: Settings) -> None:
    away = settings.model_copy(update={"temporal_address": f"127.0.0.1:{_closed_port()}"})
    with running_api(away) as api:
        api_server: ApiServer = api
        with api_server.client(api_server.token(Scope.ADMIN)) as http:
            agent = f"away-{uuid.uuid4().hex[:8]}"  # PostgreSQL is there: it is defined
            assert http.post("/v1/agents", json={"spec": {"name": agent}}).status_code == 201
            unavailable(http.get("/v1/schedules"), "Temporal")
            unavailable(http.get("/v1/schedules/nightly"), "Temporal")
            unavailable(http.post("/v1/schedules/nightly/trigger"), "Temporal")
            unavailable(
                http.post(
                    "/v1/schedules",
                    json={"id": "zz", "agent": agent, "goal": "g", "every": "1h"},
                ),
                "Temporal",
            )
            unavailable(http.post("/v1/sessions", json={"agent": agent, "goal": "g"}), "Temporal")
