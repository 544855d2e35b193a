"""The vigil worker process: builds the activities with their clients and polls Temporal."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker, WorkerDeploymentConfig

from vigil.activities.agents.runtime import AgentActivities, AgentVersions
from vigil.activities.context_cache import CachingEmbedder, ContextCache, ContextCacheConfig
from vigil.activities.hooks.delivery import WebhookActivities, WebhookTargets
from vigil.activities.hooks.urls import webhook_client
from vigil.activities.memory.embedders import Embedder
from vigil.activities.memory.provenance import MAX_LISTED, check_embedder
from vigil.activities.models.base import ModelProvider
from vigil.activities.retention import RetentionActivities
from vigil.activities.session import SessionActivities
from vigil.activities.tools.queues import ToolQueueActivities
from vigil.activities.tools.runner import WorkerTools
from vigil.workers.db import WORKER_PING_AFTER_IDLE_SECONDS, make_engine, make_sessionmaker
from vigil.workers.deployments import deployment_config
from vigil.workers.liveness import worker_identity
from vigil.workers.logs import get as get_logger
from vigil.workers.models import credential_resolver, model_router
from vigil.workers.reconcile import reconcile_periodically
from vigil.workers.settings import Settings
from vigil.workers.telemetry import metrics_address, setup_tracing, worker_runtime
from vigil.workers.temporal import connect, new_worker
from vigil.workers.tool_wiring import worker_tools
from vigil.workers.wiring import make_embedder, make_memory_store, make_provider, make_store
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
    settings: Settings | None = None
    """What the worker was built from (its ``worker_*`` Temporal options)."""
    deployment: WorkerDeploymentConfig | None = None
    """The worker deployment version it polls as (VIGIL_DEPLOYMENT_NAME, VIGIL_BUILD_ID)."""


@contextlib.asynccontextmanager
async def runtime(
    settings: Settings, provider: ModelProvider | None = None
) -> AsyncIterator[Runtime]:
    url = settings.endpoints().database_url
    if url is None:
        raise RuntimeError(settings.no_database())
    engine = make_engine(
        url, pool_size=settings.worker_db_pool_size, ping_after_idle=WORKER_PING_AFTER_IDLE_SECONDS
    )
    sessionmaker = make_sessionmaker(engine)
    # One resolver of credential names for model connections and MCP servers.
    credentials = credential_resolver(settings, sessionmaker)
    tools = worker_tools(settings, credentials.resolve)
    # Tools' HTTP client: no retries of its own (Temporal retries activities).
    http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
    webhook_http = webhook_client()
    model = provider or make_provider(settings)
    embedder = make_embedder(settings)
    if settings.embedding_cache_entries > 0:
        embedder = CachingEmbedder(embedder, settings.embedding_cache_entries)
    memory = make_memory_store(settings, sessionmaker, embedder)
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
        context_cache=context_cache(settings),
    )
    try:
        if not settings.tools_only:
            await warm_up(acts, settings.warm_up_seconds)
        yield Runtime(
            engine=engine,
            http=http,
            provider=model,
            activities=acts,
            agent_activities=AgentActivities(versions, webhooks.events),
            webhook_activities=WebhookActivities(
                sessionmaker, webhooks, credentials.resolve, webhook_http
            ),
            tools=tools,
            tools_only=settings.tools_only,
            settings=settings,
            deployment=deployment_config(settings),
        )
    finally:
        await acts.context_cache.aclose()
        await tools.aclose()
        await models.aclose()
        await model.aclose()
        await embedder.aclose()
        await http.aclose()
        await webhook_http.aclose()
        await engine.dispose()


def context_cache(settings: Settings) -> ContextCache:
    """The worker's kept contexts, bounded and budgeted by its settings."""
    return ContextCache(
        ContextCacheConfig(
            sessions=settings.context_cache_sessions,
            max_bytes=settings.context_cache_mb * 1024 * 1024,
            recall_seconds=settings.context_recall_seconds,
            time_budget_ms=settings.context_time_budget_ms or None,
        )
    )


async def refuse_other_embedder(
    sessionmaker: async_sessionmaker[AsyncSession], embedder: Embedder
) -> None:
    """Refuse to start when the configured embedder is a settings change no reindex made
    (``EmbedderNotReady`` says which, and the reindex command); name the agents still on
    another one. A database that is not reachable yet does not stop the start: recall and
    remember refuse per agent anyway.
    """
    try:
        others = await check_embedder(sessionmaker, embedder)
    except (OSError, DBAPIError) as exc:
        log.warning("embedder_check_skipped", error=type(exc).__name__)
        return
    if others:
        log.warning(
            "agents_on_another_embedder",
            count=len(others),
            agents=[f"{agent}: {stored}" for agent, stored in others[:MAX_LISTED]],
            hint="their recall is refused until `vigil memory reindex --agent AGENT` ran",
        )


async def warm_up(acts: SessionActivities, bound: float) -> None:
    """Open the connections a step's context takes and run its statements once, so a
    fresh worker's first steps are not past their time budget for it. Best effort: a
    database or an embedder that fails, or does not answer within ``bound`` seconds
    (``VIGIL_WARM_UP_SECONDS``, 15 by default), does not stop the start; the first steps
    then pay for what was not warmed."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(bound):
            await acts.warm_up()
    except Exception as exc:  # any failure only means a cold start
        log.warning("warm_up_skipped", error=type(exc).__name__, detail=str(exc)[:200])
        return
    log.info("warmed up", ms=round((time.perf_counter() - started) * 1000, 1))


def build_worker(
    client: Client, rt: Runtime, task_queue: str, workflows: Sequence[type] | None = None
) -> Worker:
    """``workflows`` replaces vigil's own (tests run a changed build of them)."""
    deployment = rt.deployment
    # Told apart by what they loaded: doctor fails a queue whose workers load different tools.
    identity = worker_identity(rt.tools.python)
    if rt.tools_only:
        # A tool worker: run_tool for the tools it loaded, no sessions of its own.
        return new_worker(
            client,
            task_queue=task_queue,
            workflows=[],
            activities=[rt.activities.run_tool],
            settings=rt.settings,
            deployment_config=deployment,
            identity=identity,
        )
    memory = rt.activities.memory
    retention = RetentionActivities(
        sessionmaker=rt.activities.sessionmaker,
        store=rt.activities.store,
        temporal=client,
        embedder_access=(lambda: contextlib.nullcontext(memory.embedder)) if memory else None,
    )
    activities = [
        *rt.activities.all(),
        *retention.all(),
        *rt.agent_activities.all(),
        *rt.webhook_activities.all(),
        *ToolQueueActivities().all(),
    ]
    return new_worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS if workflows is None else workflows,
        activities=activities,
        settings=rt.settings,
        deployment_config=deployment,
        identity=identity,
    )


def freeze_start_up() -> int:
    """Collect once, then keep everything alive so far out of the collector's scans
    (Settings.worker_gc_freeze): the worker's start-up objects outnumber what its cached
    sessions hold, and a full collection walked them all each time. How many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then finish in-flight tasks and exit."""
    endpoints = settings.endpoints()
    setup_tracing(settings, "vigil-worker")
    client = await connect(settings, runtime=worker_runtime(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with runtime(settings) as rt:
        worker = build_worker(client, rt, settings.task_queue)
        frozen = freeze_start_up() if settings.worker_gc_freeze else gc.get_freeze_count()
        log.info(
            "worker polling",
            gc_frozen=frozen,
            task_queue=settings.task_queue,
            temporal=endpoints.temporal_address,
            model=settings.model_provider,
            tools=sorted(rt.tools.python),
            tools_only=settings.tools_only,
            metrics=metrics_address(settings),
            deployment=settings.deployment_name,
            build_id=settings.build_id,
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
