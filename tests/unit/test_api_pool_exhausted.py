"""A request that waited past the pool's time for one of the API's PostgreSQL connections
(all in use: a burst past ``api_db_pool_size``, long exports) is a 503 that says so; it
was a 500 "internal error", and nothing told the caller to try again."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import TimeoutError as PoolTimeout

from vigil.workers.api import errors
from vigil.workers.settings import Settings


def test_a_full_pool_is_a_503_that_says_so() -> None:
    app = FastAPI()
    app.state.settings = Settings(api_db_pool_size=7)
    errors.install(app, caller_refusal=lambda _request: _none())

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeout("QueuePool limit of size 7 overflow 0 reached")

    with TestClient(app) as http:
        r = http.get("/busy")
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"].startswith("all 7 of the API's PostgreSQL connections"), error
    assert "try again" in error["message"]


async def _none() -> None:
    return None
