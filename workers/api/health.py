"""Liveness and readiness (no token needed: they reveal nothing but up or down; why a
part is down goes to the API's log, not to the caller: it names hosts, ports, folders and
buckets)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vigil.activities.record.health import ping
from vigil.workers.client import VigilClient
from vigil.workers.settings import Settings
from vigil.workers.wiring import make_s3_client

router = APIRouter(tags=["health"])
log = logging.getLogger("vigil.api")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    ready: bool
    checks: list[Check]


def object_store_ready(settings: Settings) -> None:
    """Raise unless the artifact store can be used: the bucket exists (S3), or the store's
    folder is there and writable (filesystem)."""
    if settings.artifact_backend == "s3":
        if not make_s3_client(settings).bucket_exists(settings.s3_bucket):
            raise RuntimeError(f"bucket {settings.s3_bucket!r} does not exist")
        return
    root = settings.endpoints().artifact_dir
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise RuntimeError(f"artifact folder {root} is missing or not writable")


@router.get("/health", response_model=Health, summary="The API process is up")
async def health() -> Health:
    return Health()


READY_WITHIN = 5.0
"""Seconds each part has to answer a readiness check."""


async def _check(name: str, probe: Coroutine[Any, Any, object]) -> Check:
    try:
        await asyncio.wait_for(probe, READY_WITHIN)
    except TimeoutError:
        log.warning("not ready: %s gave no answer within %g s", name, READY_WITHIN)
        return Check(name=name, ok=False, detail=f"no answer within {READY_WITHIN:g} s")
    except Exception as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        log.warning("not ready: %s: %s", name, why)
        return Check(name=name, ok=False, detail="down (the API's log says why)")
    return Check(name=name, ok=True)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="PostgreSQL, Temporal and the object store answer",
    responses={503: {"model": Readiness, "description": "Something vigil needs is down"}},
)
async def ready(request: Request) -> JSONResponse:
    client: VigilClient = request.app.state.client

    async def temporal() -> None:
        await client.temporal.service_client.check_health()

    checks = [
        await _check("postgres", ping(client.engine)),
        await _check("temporal", temporal()),
        await _check("object_store", asyncio.to_thread(object_store_ready, client.settings)),
    ]
    body = Readiness(ready=all(c.ok for c in checks), checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
