"""A real uvicorn server running vigil's API on a free loopback port, in a thread of its
own (its own event loop, its own database pool), for tests that speak HTTP to it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from vigil.workers.api.app import create_app
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.settings import Settings
from vigil.workers.tokens import Scope, TokenService


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    base_url: str
    """``http://127.0.0.1:PORT`` (routes are under ``/v1``)."""
    settings: Settings
    app: FastAPI | None = None
    """The served application (tests may look at its state, e.g. the live feed)."""

    def token(
        self, scope: Scope = Scope.ADMIN, *, owner: str = "tester", agents: list[str] | None = None
    ) -> str:
        """A new live token (created through the same service as `vigil token create`)."""

        async def go() -> str:
            url = self.settings.endpoints().database_url
            assert url is not None
            engine = make_engine(url, pool_size=1)
            try:
                new = await TokenService(make_sessionmaker(engine)).create(
                    owner, scope=scope, agents=agents
                )
                return new.token
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def revoke(self, token_id: str) -> None:
        async def go() -> None:
            url = self.settings.endpoints().database_url
            assert url is not None
            engine = make_engine(url, pool_size=1)
            try:
                await TokenService(make_sessionmaker(engine)).revoke(token_id)
            finally:
                await engine.dispose()

        asyncio.run(go())

    def client(self, token: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


@contextmanager
def running_api(settings: Settings) -> Iterator[ApiServer]:
    """Serve the API for ``settings`` until the block ends."""
    port = free_port()
    settings = settings.model_copy(update={"api_host": "127.0.0.1", "api_port": port})
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="vigil-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API server exited while starting")
        if time.monotonic() > deadline:
            raise RuntimeError("the API server did not start in 60 s")
        time.sleep(0.05)
    try:
        yield ApiServer(base_url=f"http://127.0.0.1:{port}", settings=settings, app=app)
    finally:
        server.should_exit = True
        thread.join(30)
