"""OpenTelemetry tracing of one vigil process (imported only when a collector is configured).

One TracerProvider per process (its spans are one service's, sent by one exporter), kept
here rather than installed as OpenTelemetry's global, so a test process or an embedding
application keeps its own. Temporal's TracingInterceptor carries the trace context (and
the session's ids as W3C baggage) through workflow and activity headers; it makes workflow
spans only when not replaying, so a replayed history never emits them twice.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import client as temporal_client
from temporalio import worker as temporal_worker
from temporalio.contrib.opentelemetry import TracingInterceptor

from vigil.activities.record import lean
from vigil.workers.settings import Settings
from vigil.workers.telemetry import AGENT_ID, IDS, SESSION_ID, traces_endpoint

log = logging.getLogger("vigil.telemetry")

CLI_SERVICE = "vigil"
"""The service name of a client that did not name itself (a CLI command)."""
CLI_EXPORT_TIMEOUT = 2.0
WORKFLOW_ID_ATTRIBUTE = "temporalWorkflowID"
"""Set by Temporal's TracingInterceptor on its client and workflow spans."""


class _Process:
    """This process's tracing, started once."""

    provider: TracerProvider | None = None
    instrumented: set[int] = set()


def start(settings: Settings, service: str) -> TracerProvider:
    if _Process.provider is not None:
        return _Process.provider
    endpoint = traces_endpoint(settings)
    assert endpoint is not None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name or service})
    )
    provider.add_span_processor(SessionSpans())
    # A CLI command waits for its spans at exit: with the collector away, briefly.
    timeout = CLI_EXPORT_TIMEOUT if service == CLI_SERVICE else None
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=timeout)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Webhooks and http_fetch speak httpx: one span per request. Model providers and
    # embedders make their own client spans (activities/models/http.py).
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    # A short-lived CLI command sends its spans before it exits.
    atexit.register(provider.shutdown)
    _Process.provider = provider
    # vigil's own spans (a tool call run inside the model activity) use the global one.
    trace.set_tracer_provider(provider)
    log.info("tracing to %s as %s", endpoint, settings.otel_service_name or service)
    return provider


def interceptors() -> list[Any]:
    provider = _Process.provider
    assert provider is not None
    # SessionIds first: it is the outermost around an activity, so the activity's own
    # span already knows its session and agent.
    return [SessionIds(), TracingInterceptor(provider.get_tracer("vigil"))]


@contextlib.contextmanager
def scope(session_id: str, agent_id: str) -> Iterator[None]:
    ids = IDS.set((session_id, agent_id))
    carried = baggage.set_baggage(SESSION_ID, session_id)
    carried = baggage.set_baggage(AGENT_ID, agent_id, carried)
    token = otel_context.attach(carried)
    try:
        yield
    finally:
        otel_context.detach(token)
        IDS.reset(ids)


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per statement, through SQLAlchemy's cursor events (asyncpg underneath)."""
    provider = _Process.provider
    sync_engine = engine.sync_engine
    if provider is None or id(sync_engine) in _Process.instrumented:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    usage = NoOpMeter("vigil").create_up_down_counter("db.client.connections.usage")
    tracer = provider.get_tracer("vigil.sql")
    EngineTracer(tracer, sync_engine, usage)  # type: ignore[no-untyped-call]
    _Process.instrumented.add(id(sync_engine))
    database = sync_engine.url.database

    def statement_span(statement: str) -> contextlib.AbstractContextManager[Any]:
        # Named and described as the SQLAlchemy instrumentation names its spans.
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        return tracer.start_as_current_span(
            f"{verb} {database}" if database else verb,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.name": database or "",
                "db.statement": statement,
            },
        )

    lean.trace_statements(statement_span)


class SessionSpans(SpanProcessor):
    """Puts the session id and agent id on every span: from the work in progress (a
    client's start, an activity), else from the baggage the trace carries, else (for a
    control call on a session) the workflow id Temporal's interceptor recorded."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        session, agent = IDS.get()
        if session is None or agent is None:
            carried = baggage.get_all(parent_context)
            session = session or _text(carried.get(SESSION_ID))
            agent = agent or _text(carried.get(AGENT_ID))
        if session is None:
            session = _text((span.attributes or {}).get(WORKFLOW_ID_ATTRIBUTE))
        if session is not None:
            span.set_attribute(SESSION_ID, session)
        if agent is not None:
            span.set_attribute(AGENT_ID, agent)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class SessionIds(temporal_client.Interceptor, temporal_worker.Interceptor):
    """Around each activity: the session id and agent id its input names, for its spans."""

    def intercept_activity(
        self, next: temporal_worker.ActivityInboundInterceptor
    ) -> temporal_worker.ActivityInboundInterceptor:
        return _ActivityIds(next)


class _ActivityIds(temporal_worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        session = _text(getattr(arg, "session_id", None))
        agent = _text(getattr(arg, "agent_id", None))
        token = IDS.set((session, agent))
        try:
            return await super().execute_activity(input)
        finally:
            IDS.reset(token)
