"""The pieces of tracing that need no services: where spans go, the session and agent ids
every span gets, and the trace ids a log line gets (the whole path, through a real worker
and collector, is tests/integration/test_telemetry.py)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vigil.workers.settings import Settings
from vigil.workers.telemetry import AGENT_ID, IDS, SESSION_ID, add_trace_ids, traces_endpoint
from vigil.workers.tracing import SessionSpans


def test_no_endpoint_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("VIGIL_OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert traces_endpoint(Settings()) is None


def test_the_standard_variable_names_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert traces_endpoint(Settings()) == "http://collector:4318/v1/traces"


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SessionSpans())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider, exported


def test_ids_from_the_work_in_progress_then_baggage_then_workflow_id() -> None:
    provider, exported = _provider()
    tracer = provider.get_tracer("t")
    token = IDS.set(("s-1", "ana"))
    try:
        with tracer.start_as_current_span("activity"):
            pass
    finally:
        IDS.reset(token)
    carried = baggage.set_baggage(AGENT_ID, "bob", baggage.set_baggage(SESSION_ID, "s-2"))
    attached = otel_context.attach(carried)
    try:
        with tracer.start_as_current_span("workflow"):
            pass
    finally:
        otel_context.detach(attached)
    with tracer.start_as_current_span("signal", attributes={"temporalWorkflowID": "s-3"}):
        pass
    with tracer.start_as_current_span("unrelated"):
        pass
    got = {s.name: dict(s.attributes or {}) for s in exported.get_finished_spans()}
    assert got["activity"][SESSION_ID] == "s-1" and got["activity"][AGENT_ID] == "ana"
    assert got["workflow"][SESSION_ID] == "s-2" and got["workflow"][AGENT_ID] == "bob"
    assert got["signal"][SESSION_ID] == "s-3" and AGENT_ID not in got["signal"]
    assert SESSION_ID not in got["unrelated"]


def test_a_log_line_inside_a_span_carries_its_ids() -> None:
    provider, _ = _provider()
    event: MutableMapping[str, Any] = {"event": "outside"}
    assert "trace_id" not in add_trace_ids(None, "info", event)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        inside = add_trace_ids(None, "info", {"event": "inside"})
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
