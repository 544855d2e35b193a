"""Telemetry as an operator sees it: a real `vigil worker` and `vigil start` exporting spans
to a real OTLP/HTTP receiver (one trace from the client through the workflow, the activities,
the model's HTTP call and SQL, every span naming its session and agent; the worker's log
lines inside it carry its trace id), and Prometheus endpoints (the worker's, the API's)
whose counters move when a session runs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.api import free_port, running_api
from tests.support.cli import (
    SessionScripts,
    Vigil,
    WorkerProcess,
    cli_env,
    poll,
    wait_approval,
    wait_recorded,
)
from tests.support.llm_stub import LLMStub, Reply
from tests.support.otlp_collector import OTLPCollector, ReceivedSpan
from vigil.workers.settings import Settings
from vigil.workers.stack import Stack
from vigil.workers.tokens import Scope

pytestmark = pytest.mark.integration


@dataclass
class Observed:
    stub: LLMStub
    scripts: SessionScripts
    collector: OTLPCollector
    vigil: Vigil
    worker: WorkerProcess
    metrics_url: str
    settings: Settings
    database_url: str


@pytest.fixture(scope="module")
def observed(
    stack: Stack, database_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    task_queue = f"tq-telemetry-{uuid.uuid4()}"
    tmp = tmp_path_factory.mktemp("telemetry")
    port = free_port()
    scripts = SessionScripts()
    with OTLPCollector() as collector, LLMStub() as stub:
        stub.default = scripts
        env = cli_env(
            database_url=database_url,
            state_dir=stack.settings.resolved_state_dir,
            task_queue=task_queue,
            model_url=stub.url_openai,
            artifact_dir=tmp / "artifacts",
            VIGIL_OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            OTEL_BSP_SCHEDULE_DELAY="100",  # spans leave within a tenth of a second
            VIGIL_WORKER_METRICS_PORT=str(port),
            VIGIL_LOG_FORMAT="json",
        )
        worker = WorkerProcess(env, tmp / "worker.log").start()
        local = settings.model_copy(
            update={"task_queue": task_queue, "allow_undefined_agents": True}
        )
        try:
            yield Observed(
                stub=stub,
                scripts=scripts,
                collector=collector,
                vigil=Vigil(env),
                worker=worker,
                metrics_url=f"http://127.0.0.1:{port}/metrics",
                settings=local,
                database_url=database_url,
            )
        finally:
            code = worker.stop()
        assert code == 0, worker.log()[-3000:]
        assert not collector.errors, collector.errors


def _agent() -> str:
    return f"otel-{uuid.uuid4().hex[:8]}"


def test_one_trace_from_start_to_sql_names_session_and_agent(observed: Observed) -> None:
    goal = observed.scripts.plan(
        Reply.tool_call("write_artifact", {"name": "notes.txt", "content": "traced"}),
        Reply.tool_call("finish", {"summary": "written"}),
    )
    agent = _agent()
    sid = observed.vigil.json("start", goal, "--agent", agent, "--wait")["id"]

    def started() -> ReceivedSpan | None:
        for span in observed.collector.snapshot():
            if (
                span.name.startswith("StartWorkflow")
                and span.attributes.get("vigil.session_id") == sid
            ):
                return span
        return None

    start = poll(started, 30, "the client's StartWorkflow span")
    assert start.service == "vigil"
    assert start.attributes.get("vigil.agent_id") == agent

    seen: set[str] = set()

    def trace() -> list[ReceivedSpan] | None:
        spans = [s for s in observed.collector.snapshot() if s.trace_id == start.trace_id]
        names = {s.name for s in spans}
        seen.update(names)
        wanted = (
            any(n.startswith("RunWorkflow:") for n in names)
            and any(n.startswith("RunActivity:") and "call_model" in n for n in names)
            # write_artifact runs inside call_model (a folded step), in a span of its own
            and "RunTool" in names
            and any("CompleteWorkflow" in n for n in names)
        )
        return spans if wanted else None

    try:
        spans = poll(trace, 30, "the workflow's and activities' spans in the client's trace")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; spans seen: {sorted(seen)}") from None
    # Give the last batches a moment, then take every span of the trace.
    spans = poll(lambda: _sql_and_http(observed, start.trace_id), 15, "SQL and HTTP spans")
    services = {s.service for s in spans}
    assert {"vigil", "vigil-worker"} <= services
    model_http = [
        s
        for s in spans
        if s.service == "vigil-worker"
        and "/chat/completions"
        in str(s.attributes.get("url.full") or s.attributes.get("http.url") or "")
    ]
    assert model_http, sorted({s.name for s in spans})
    sql = [s for s in spans if s.attributes.get("db.system") or s.attributes.get("db.system.name")]
    assert any("INSERT" in str(s.attributes.get("db.statement", s.name)) for s in sql)
    # The step's own statements (lean transactions, straight on the driver) too: the
    # reply, its event and the usage are written by one statement.
    assert any("u AS (UPDATE sessions" in str(s.attributes.get("db.statement")) for s in sql)
    unnamed = [
        (s.service, s.name)
        for s in spans
        if s.attributes.get("vigil.session_id") != sid
        or s.attributes.get("vigil.agent_id") != agent
    ]
    assert unnamed == []

    # A worker log line inside the trace carries its trace id (and a span id).
    def logged() -> list[dict[str, object]]:
        lines = []
        for raw in observed.worker.log().splitlines():
            if start.trace_id in raw:
                lines.append(json.loads(raw))
        return lines

    lines = poll(logged, 15, "a worker log line with the trace id")
    assert all(re.fullmatch(r"[0-9a-f]{16}", str(ln["span_id"])) for ln in lines)


def _sql_and_http(observed: Observed, trace_id: str) -> list[ReceivedSpan] | None:
    spans = [s for s in observed.collector.snapshot() if s.trace_id == trace_id]
    has_sql = any(
        s.attributes.get("db.system") or s.attributes.get("db.system.name") for s in spans
    )
    has_http = any(s.name in ("POST", "GET") or s.name.startswith(("POST", "GET")) for s in spans)
    return spans if has_sql and has_http else None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus endpoint: (name, labels) -> value."""
    return scrape_text(httpx.get(url, timeout=10).raise_for_status().text)


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_worker_metrics_move_when_a_session_runs(observed: Observed) -> None:
    agent = _agent()
    before = scrape(observed.metrics_url)
    assert total(before, "vigil_steps_total", agent_id=agent) == 0
    completed_before = total(before, "temporal_workflow_completed_total")
    goal = observed.scripts.plan(
        Reply.tool_call("write_artifact", {"name": "notes.txt", "content": "counted"}),
        Reply.tool_call("read_artifact", {"name": "no-such-artifact.txt"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    observed.vigil.json("start", goal, "--agent", agent, "--wait")

    def moved() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        after = scrape(observed.metrics_url)
        return after if total(after, "vigil_steps_total", agent_id=agent) >= 3 else None

    after = poll(moved, 30, "vigil_steps_total counts the session's steps")
    assert total(after, "vigil_model_calls_total", agent_id=agent, outcome="ok") == 3
    assert total(after, "vigil_model_call_seconds_count", agent_id=agent, model="stub") == 3
    assert total(after, "vigil_model_tokens_total", agent_id=agent, direction="in") > 0
    assert total(after, "vigil_model_tokens_total", agent_id=agent, direction="out") > 0
    assert total(after, "vigil_model_cost_usd_count", agent_id=agent) == 3
    tools = "vigil_tool_calls_total"
    assert total(after, tools, agent_id=agent, tool="write_artifact", outcome="ok") == 1
    assert total(after, tools, agent_id=agent, tool="read_artifact", outcome="error") == 1
    assert total(after, tools, agent_id=agent, tool="finish", outcome="ok") == 1
    assert total(after, "vigil_context_assembly_seconds_count", agent_id=agent) == 3
    assert total(after, "vigil_recall_seconds_count", agent_id=agent) >= 1
    # Temporal's own metrics on the same endpoint.
    assert total(after, "temporal_workflow_completed_total") > completed_before


def test_api_metrics_show_waiting_approvals_to_an_admin(observed: Observed, tmp_path: Path) -> None:
    agent = _agent()
    goal = observed.scripts.plan(
        Reply.tool_call("http_fetch", {"url": f"{observed.stub.url}/page"}),
        Reply.tool_call("finish", {"summary": "done"}),
    )
    sid = observed.vigil.json("start", goal, "--agent", agent, "--approve-tools", "http_fetch")[
        "id"
    ]
    wait_approval(observed.database_url, sid, "a1-0")
    with running_api(observed.settings) as api:
        with api.client() as anonymous:
            assert anonymous.get("/metrics").status_code == 401
        with api.client(api.token(Scope.CONTROL)) as control:
            assert control.get("/metrics").status_code == 403
        with api.client(api.token(Scope.ADMIN)) as admin:
            page = admin.get("/metrics")
            assert page.status_code == 200, page.text
            assert page.headers["content-type"].startswith("text/plain")
            waiting = scrape_text(page.text)
            assert total(waiting, "vigil_approvals_waiting", agent_id=agent) == 1
            assert total(waiting, "vigil_approval_oldest_age_seconds", agent_id=agent) >= 0
        # An admin token for other agents sees their figures only: it was shown this one's.
        with api.client(api.token(Scope.ADMIN, agents=[_agent()])) as theirs:
            page = theirs.get("/metrics")
            assert page.status_code == 200, page.text
            assert agent not in page.text
        with api.client(api.token(Scope.ADMIN, agents=[agent])) as its_own:
            mine = scrape_text(its_own.get("/metrics").text)
            assert total(mine, "vigil_approvals_waiting", agent_id=agent) == 1
        with api.client(api.token(Scope.ADMIN)) as admin:
            observed.vigil.ok("approve", sid, "a1-0")
            wait_recorded(observed.database_url, sid, "completed")
            after = scrape_text(admin.get("/metrics").text)
            assert total(after, "vigil_approvals_waiting", agent_id=agent) == 0


def scrape_text(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page: (name, labels) -> value."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is not None:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(2) or ""))
            out[(found.group(1), labels)] = float(found.group(3))
    return out
