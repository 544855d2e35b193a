"""The API application: one FastAPI app under ``/v1`` over the typed services.

Routes live in one module per resource (``workers/api/<resource>.py``), each with a
``router``; :func:`create_app` mounts them. The app holds one connected
:class:`VigilClient` (the same service layer the CLI uses) and the token service.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse

from vigil.workers.api import (
    agents,
    approvals,
    artifacts,
    auth,
    control,
    docs,
    errors,
    health,
    hooks,
    keyed,
    me,
    memory,
    metrics,
    schedules,
    sessions,
    streams,
    strict_query,
)
from vigil.workers.api.limits import BodyLimit, JsonBodies
from vigil.workers.api.urls import Utf8Urls
from vigil.workers.artifacts import ArtifactService
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings
from vigil.workers.telemetry import setup_tracing
from vigil.workers.tokens import TokenService

API_VERSION = "1.0.0"
PREFIX = "/v1"

UPLOAD_PATHS = r"^/v1/sessions/[^/]+/artifacts/"
"""Routes whose bodies stream to the object store, outside the body cap."""

FOREIGN_BODY_PATHS = r"^/v1/triggers/"
"""Routes whose JSON bodies are another system's, taken as it writes them: a signed trigger
delivery is not refused for a key its sender gives twice (a refused delivery is lost; its
templates read the value Python's parser keeps, the last)."""

FREE_QUERY_ENDPOINTS = (hooks.fire_trigger, metrics.metrics)
"""Routes that take any query string: the metrics a scraper may ask with parameters of its
own, and signed trigger deliveries, whose senders may add
query strings of their own (the signature covers the body, and a refused delivery is
lost). Every other route refuses a query parameter it does not declare."""


def routers() -> list[APIRouter]:
    """Every resource's router, in the order the OpenAPI document lists them."""
    return [
        health.router,
        me.router,
        agents.router,
        keyed.router,
        sessions.router,
        control.router,
        approvals.router,
        schedules.router,
        memory.router,
        artifacts.router,
        streams.router,
        hooks.router,
    ]


class RecordJSON(JSONResponse):
    """JSON as every route answers it, where a lone surrogate the record keeps (a broken
    model's ``"\\ud83c"``, half an emoji, kept exactly) is written as its JSON escape,
    which a JSON parser reads back as the same text (two halves in a row: the character
    they make): the default serializer refuses such text, and the route answered 500 (the
    approvals inbox of every token that saw the agent included). A float that is not
    finite is written as null, as the default serializer writes it."""

    def render(self, content: Any) -> bytes:
        try:
            text = _dumps(content)
        except ValueError:  # NaN or an infinity somewhere: JSON has no such number
            text = _dumps(_finite(content))
        # A surrogate can only stand inside a JSON string: its backslash escape there is
        # the JSON escape of that code unit.
        return text.encode("utf-8", "backslashreplace")


def _dumps(content: Any) -> str:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def create_app(settings: Settings) -> FastAPI:
    setup_tracing(settings, "vigil-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = await VigilClient.connect(settings, db_pool_size=settings.api_db_pool_size)
        app.state.client = client
        app.state.tokens = TokenService(client.db)
        with contextlib.suppress(Exception):  # no S3 endpoint yet: readiness says so
            app.state.artifacts = ArtifactService(client)
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(
        title="vigil",
        version=API_VERSION,
        summary="Durable autonomous AI agents: sessions, approvals, memory and artifacts.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=RecordJSON,
        responses=errors.ERROR_RESPONSES,
        dependencies=[
            Depends(auth.refuse_held_body),
            Depends(strict_query.refuse_unknown_query(free=FREE_QUERY_ENDPOINTS)),
        ],
    )
    app.state.settings = settings
    errors.install(app, auth.caller_refusal)
    docs.install(app, PREFIX)
    for router in routers():
        app.include_router(router, prefix=PREFIX)
    app.include_router(metrics.router)  # where Prometheus looks, beside the versioned API
    # Added first, so it runs inside BodyLimit and reads bodies already capped.
    app.add_middleware(JsonBodies, unbounded=UPLOAD_PATHS, foreign=FOREIGN_BODY_PATHS)
    app.add_middleware(BodyLimit, limit=settings.api_max_body_bytes, unbounded=UPLOAD_PATHS)
    app.add_middleware(Utf8Urls)
    return app
