"""``GET /metrics``: the API's Prometheus metrics, for an admin token.

What it shows is read from the record at scrape time (approvals waiting, per agent, and the
age of the oldest), so every API process answers the same and nothing is held between
scrapes. It names agents, so it needs an admin token (Prometheus sends one with
``authorization: {credentials_file: ...}``), and shows a token for some agents theirs
only. The worker's metrics (steps, model calls, tokens, cost, tools, recall, context
assembly, Temporal's own) are on the worker's endpoint (``VIGIL_WORKER_METRICS_PORT``,
loopback), not here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.process_collector import ProcessCollector

from vigil.activities.record import sessions as session_reads
from vigil.workers.api.auth import require
from vigil.workers.api.deps import Client
from vigil.workers.tokens import Principal, Scope

router = APIRouter(tags=["metrics"])

APPROVALS_WAITING = "vigil_approvals_waiting"
APPROVAL_AGE = "vigil_approval_oldest_age_seconds"


@router.get(
    "/metrics",
    summary="Prometheus metrics of vigil (admin token)",
    include_in_schema=False,  # the OpenAPI document is the versioned /v1 API only
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(
    client: Client, who: Annotated[Principal, Depends(require(Scope.ADMIN))]
) -> Response:
    async with client.db() as db:
        waiting = await session_reads.approvals_waiting(db)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    count = Gauge(
        APPROVALS_WAITING, "Approvals waiting for a person", ["agent_id"], registry=registry
    )
    age = Gauge(
        APPROVAL_AGE,
        "Age of the longest-waiting approval, in seconds",
        ["agent_id"],
        registry=registry,
    )
    for row in waiting:
        if not who.sees_agent(row.agent_id):
            continue  # a token for other agents is not told of this one
        count.labels(agent_id=row.agent_id).set(row.waiting)
        age.labels(agent_id=row.agent_id).set(row.oldest_seconds)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
