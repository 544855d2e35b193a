"""Traces and metrics of vigil's processes: both off unless configured, and then free.

Tracing (``VIGIL_OTEL_EXPORTER_OTLP_ENDPOINT`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``): OpenTelemetry spans exported over OTLP/HTTP, one trace from
the client's start of a session through its workflow (replay-safe: no span while replaying),
every activity, the model provider's HTTP calls and every SQL statement, each span carrying
the session id and agent id, each log line inside a span its trace and span ids. The heavy
part is workers/tracing.py, imported only once tracing is configured: a CLI command without
it imports no OpenTelemetry at all.

Metrics (``VIGIL_WORKER_METRICS_PORT``): the worker's Temporal runtime serves Prometheus on
loopback; vigil's own metrics (activities/metrics.py) are recorded through that runtime's
meter, so one endpoint shows the SDK's and vigil's. The API serves its own on ``/metrics``
(workers/api/metrics.py).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from vigil.workers.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from temporalio.runtime import Runtime

SESSION_ID = "vigil.session_id"
"""Span attribute (and baggage entry) naming the session: its Temporal workflow id."""
AGENT_ID = "vigil.agent_id"
"""Span attribute (and baggage entry) naming the agent the span works for."""

IDS: ContextVar[tuple[str | None, str | None]] = ContextVar("vigil_span_ids", default=(None, None))
"""(session id, agent id) of the work in progress: set around a client's start of a session
and around each activity (workers/tracing.py), read by the span processor."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COST_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go (OTLP/HTTP), or None: tracing is off."""
    base = (settings.otel_exporter_otlp_endpoint or "").strip()
    if not base:
        return None
    return base.rstrip("/") + "/v1/traces"


def setup_tracing(settings: Settings, service: str) -> bool:
    """Start exporting this process's spans, once; False (and nothing imported) when no
    collector is configured. The first call names the service."""
    if traces_endpoint(settings) is None:
        return False
    from vigil.workers import tracing

    tracing.start(settings, service)
    return True


def client_interceptors(settings: Settings) -> list[Any]:
    """Interceptors of a Temporal client (and so of every worker built from it)."""
    if not setup_tracing(settings, "vigil"):  # a process that did not name itself: the CLI
        return []
    from vigil.workers import tracing

    return tracing.interceptors()


@contextlib.contextmanager
def session_scope(session_id: str, agent_id: str) -> Iterator[None]:
    """Work for one session (a client's start of it): its spans carry both ids, and the
    trace context sent to Temporal carries them on (as baggage) to the workflow and its
    activities. Nothing at all when tracing is off."""
    tracing = sys.modules.get("vigil.workers.tracing")
    if tracing is None:
        yield
        return
    with tracing.scope(session_id, agent_id):
        yield


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per SQL statement of ``engine`` when tracing is on."""
    tracing = sys.modules.get("vigil.workers.tracing")
    if tracing is not None:
        tracing.instrument_engine(engine)


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's trace and span ids on the line. Looks only
    when OpenTelemetry is loaded, so logging without tracing costs a dict lookup."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return event
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def metrics_address(settings: Settings) -> str | None:
    if settings.worker_metrics_port is None:
        return None
    return f"{settings.metrics_host}:{settings.worker_metrics_port}"


def worker_runtime(settings: Settings) -> Runtime | None:
    """The worker's Temporal runtime serving Prometheus metrics (SDK's and vigil's own,
    activities/metrics.py), or None: the default runtime, no metrics."""
    address = metrics_address(settings)
    if address is None:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    from vigil.activities import metrics

    buckets: dict[str, tuple[float, ...]] = {name: DURATION_BUCKETS for name in metrics.DURATIONS}
    buckets.update({name: COST_BUCKETS for name in metrics.COSTS})
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides=buckets,
            )
        )
    )


def describe(settings: Settings) -> list[tuple[str, str]]:
    """What `vigil doctor` says about telemetry: (part, where or "off")."""
    traces = traces_endpoint(settings)
    metrics = metrics_address(settings)
    return [
        ("traces (OTLP)", traces or "off (set VIGIL_OTEL_EXPORTER_OTLP_ENDPOINT)"),
        (
            "worker metrics",
            f"http://{metrics}/metrics" if metrics else "off (set VIGIL_WORKER_METRICS_PORT)",
        ),
    ]
