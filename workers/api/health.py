"""Liveness and readiness (no token needed: they reveal nothing but up or down)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vigil.activities.record.health import ping
from vigil.workers.client import VigilClient

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    ready: bool
    checks: list[Check]


@router.get("/health", response_model=Health, summary="The API process is up")
async def health() -> Health:
    return Health()


async def _check(name: str, probe: Coroutine[Any, Any, object]) -> Check:
    try:
        await asyncio.wait_for(probe, 5)
    except Exception as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        return Check(name=name, ok=False, detail=detail)
    return Check(name=name, ok=True)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="PostgreSQL and Temporal answer",
    responses={503: {"model": Readiness, "description": "Something vigil needs is down"}},
)
async def ready(request: Request) -> JSONResponse:
    client: VigilClient = request.app.state.client

    async def temporal() -> None:
        await client.temporal.service_client.check_health()

    checks = [await _check("postgres", ping(client.engine)), await _check("temporal", temporal())]
    body = Readiness(ready=all(c.ok for c in checks), checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
