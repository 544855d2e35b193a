"""vigil's own metrics, recorded by the activities through their worker's Temporal runtime.

``activity.metric_meter()`` is the meter of the runtime the worker runs on: with
``VIGIL_WORKER_METRICS_PORT`` set, that runtime serves Prometheus (workers/telemetry.py), so
these land on the same endpoint as the SDK's own (``temporal_*``) and carry its namespace,
task queue and activity type; without it the meter is a no-op and recording costs nothing.
Outside an activity (a benchmark calling a helper) nothing is recorded.

Labels are bounded: agent ids and model names come from definitions and connections, and a
tool name the model made up is counted as ``unknown``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from temporalio import activity
from temporalio.common import MetricMeter

log = logging.getLogger("vigil.metrics")

STEPS = "vigil_steps"
"""Counter: steps (model turns) recorded, by agent. Prometheus adds ``_total``."""
MODEL_CALLS = "vigil_model_calls"
"""Counter: calls to a model provider, by agent, model and outcome (ok / error)."""
MODEL_SECONDS = "vigil_model_call_seconds"
"""Histogram: a model call's latency in seconds, by agent and model."""
MODEL_TOKENS = "vigil_model_tokens"
"""Counter: tokens, by agent, model and direction (in / out)."""
MODEL_COST = "vigil_model_cost_usd"
"""Histogram: a call's cost in USD by agent and model; its ``_sum`` is the spend."""
TOOL_CALLS = "vigil_tool_calls"
"""Counter: tool calls, by agent, tool and outcome (ok / error)."""
CONTEXT_SECONDS = "vigil_context_assembly_seconds"
"""Histogram: assembling one model call's context (record, memories, artifacts)."""
RECALL_SECONDS = "vigil_recall_seconds"
"""Histogram: one memory recall (embedding the query and the hybrid search)."""

DURATIONS = (MODEL_SECONDS, CONTEXT_SECONDS, RECALL_SECONDS)
_HELP = {
    MODEL_SECONDS: "Model call latency",
    CONTEXT_SECONDS: "Context assembly time of a model call",
    RECALL_SECONDS: "Memory recall latency",
}
COSTS = (MODEL_COST,)


def _meter() -> MetricMeter:
    try:
        return activity.metric_meter()
    except RuntimeError:  # not in an activity
        return MetricMeter.noop


def model_call(
    *,
    session_id: str,
    agent_id: str,
    model: str,
    seconds: float,
    tokens_in: int,
    tokens_out: int,
    cost_usd: float,
    new_step: bool,
) -> None:
    """One answered model call (``new_step``: its reply is the step's first record)."""
    meter = _meter()
    labels = {"agent_id": agent_id, "model": model}
    meter.create_counter(MODEL_CALLS, "Calls to a model provider").add(
        1, {**labels, "outcome": "ok"}
    )
    meter.create_histogram_float(MODEL_SECONDS, _HELP[MODEL_SECONDS], "s").record(seconds, labels)
    tokens = meter.create_counter(MODEL_TOKENS, "Model tokens")
    tokens.add(max(0, tokens_in), {**labels, "direction": "in"})
    tokens.add(max(0, tokens_out), {**labels, "direction": "out"})
    meter.create_histogram_float(MODEL_COST, "Model call cost", "USD").record(
        max(0.0, cost_usd), labels
    )
    if new_step:
        meter.create_counter(STEPS, "Steps recorded").add(1, {"agent_id": agent_id})
    log.debug(
        "model %s answered %s in %.3f s (%d tokens in, %d out)",
        model,
        session_id,
        seconds,
        tokens_in,
        tokens_out,
        extra={"session_id": session_id, "agent_id": agent_id},
    )


def model_failed(*, agent_id: str, model: str) -> None:
    _meter().create_counter(MODEL_CALLS, "Calls to a model provider").add(
        1, {"agent_id": agent_id, "model": model, "outcome": "error"}
    )


def tool_call(*, agent_id: str, tool: str, ok: bool) -> None:
    _meter().create_counter(TOOL_CALLS, "Tool calls").add(
        1, {"agent_id": agent_id, "tool": tool, "outcome": "ok" if ok else "error"}
    )


@contextlib.contextmanager
def timed(name: str, agent_id: str) -> Iterator[None]:
    """Record how long the block took into the histogram ``name`` (one of DURATIONS)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _meter().create_histogram_float(name, _HELP[name], "s").record(
            time.perf_counter() - started, {"agent_id": agent_id}
        )
