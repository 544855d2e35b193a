"""The vigil worker process: builds the activities with their clients and polls Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from vigil.activities.agents.runtime import AgentActivities, AgentVersions
from vigil.activities.hooks.delivery import WebhookActivities, WebhookTargets
from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.provenance import check_embedder
from vigil.activities.models.base import ModelProvider
from vigil.activities.retention import RetentionActivities
from vigil.activities.session import SessionActivities
from vigil.activities.tools.queues import ToolQueueActivities
from vigil.activities.tools.runner import WorkerTools
from vigil.workers.db import make_engine, make_sessionmaker
from vigil.workers.logs import get as get_logger
from vigil.workers.models import credential_resolver, model_router
from vigil.workers.reconcile import reconcile_periodically
from vigil.workers.settings import Settings
from vigil.workers.temporal import connect, new_worker
from vigil.workers.tool_wiring import worker_tools
from vigil.workers.wiring import make_embedder, make_provider, make_store
from vigil.workflows.retention import RetentionRun
from vigil.workflows.session import AgentSession
from vigil.workflows.webhooks import WebhookNotify

log = get_logger("vigil.worker")
WORKFLOWS: list[type] = [AgentSession, RetentionRun, WebhookNotify]


@dataclass
class Runtime:
    """Everything a worker's activities hold; closed together."""

    engine: AsyncEngine
    http: httpx.AsyncClient
    provider: ModelProvider
    activities: SessionActivities
    agent_activities: AgentActivities
    webhook_activities: WebhookActivities
    tools: WorkerTools
    tools_only: bool = False


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings, provider: ModelProvider | None = None
) -> AsyncIterator[Runtime]:
    url = settings.endpoints().database_url
    if url is None:
        raise RuntimeError("no database: set DATABASE_URL or run `vigil stack up`")
    engine = make_engine(url)
    sessionmaker = make_sessionmaker(engine)
    # One resolver of credential names for model connections and MCP servers.
    credentials = credential_resolver(settings, sessionmaker)
    tools = worker_tools(settings, credentials.resolve)
    # Tools' HTTP client: no retries of its own (Temporal retries activities).
    http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
    model = provider or make_provider(settings)
    memory = None
    try:
        from vigil.activities.memory.store import MemoryStore

        memory = MemoryStore(sessionmaker, make_embedder(settings))
    except ImportError:  # memory is optional until its module lands
        memory = None
    if memory is not None:
        await refuse_other_embedder(sessionmaker, memory.embedder)
    models = model_router(settings, model, credentials)
    versions = AgentVersions(sessionmaker)
    webhooks = WebhookTargets(sessionmaker, versions)
    acts = SessionActivities(
        settings=settings,
        sessionmaker=sessionmaker,
        store=make_store(settings),
        provider=model,
        http=http,
        memory=memory,
        models=models,
        agents=versions,
        tools=tools,
    )
    try:
        yield Runtime(
            engine=engine,
            http=http,
            provider=model,
            activities=acts,
            agent_activities=AgentActivities(versions, webhooks.events),
            webhook_activities=WebhookActivities(sessionmaker, webhooks, credentials.resolve, http),
            tools=tools,
            tools_only=settings.tools_only,
        )
    finally:
        await tools.aclose()
        await models.aclose()
        await model.aclose()
        await http.aclose()
        await engine.dispose()


async def refuse_other_embedder(
    sessionmaker: async_sessionmaker[AsyncSession], embedder: Embedder
) -> None:
    """Refuse to start when agents' memories come from another embedder than the configured
    one (``EmbedderNotReady`` says which, and the reindex command). A database that is not
    reachable yet does not stop the start: recall and remember refuse per agent anyway.
    """
    try:
        await check_embedder(sessionmaker, embedder)
    except (OSError, DBAPIError) as exc:
        log.warning("embedder_check_skipped", error=type(exc).__name__)


def build_worker(client: Client, rt: Runtime, task_queue: str) -> Worker:
    if rt.tools_only:
        # A tool worker: run_tool for the tools it loaded, no sessions of its own.
        return new_worker(
            client, task_queue=task_queue, workflows=[], activities=[rt.activities.run_tool]
        )
    retention = RetentionActivities(
        sessionmaker=rt.activities.sessionmaker, store=rt.activities.store, temporal=client
    )
    activities = [
        *rt.activities.all(),
        *retention.all(),
        *rt.agent_activities.all(),
        *rt.webhook_activities.all(),
        *ToolQueueActivities().all(),
    ]
    return new_worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=activities)


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then finish in-flight tasks and exit."""
    endpoints = settings.endpoints()
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with runtime(settings) as rt:
        worker = build_worker(client, rt, settings.task_queue)
        log.info(
            "worker polling",
            task_queue=settings.task_queue,
            temporal=endpoints.temporal_address,
            model=settings.model_provider,
            tools=sorted(rt.tools.python),
            tools_only=settings.tools_only,
        )
        reconciling = (
            asyncio.create_task(
                reconcile_periodically(
                    client, make_sessionmaker(rt.engine), every=settings.reconcile_seconds
                )
            )
            if settings.reconcile_seconds > 0 and not settings.tools_only
            else None
        )
        try:
            async with worker:
                await stop.wait()
        finally:
            if reconciling is not None:
                reconciling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconciling
    log.info("worker stopped")
